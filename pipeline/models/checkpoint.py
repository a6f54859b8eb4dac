"""Checkpoints that carry their own preprocessing: architecture, class names, frames, size, sampling
(model_config.ModelConfig, which reads them without torch).

Inference reads these from the checkpoint, never from flags that could disagree with how the model
was trained. Files hold only tensors and plain values and load with `weights_only=True`, so loading
never unpickles arbitrary objects.
"""

from __future__ import annotations

import io
import os

import torch
from torch import nn

from ..errors import CheckpointError
from ..model_config import (FORMAT, SAMPLING, ModelConfig,  # noqa: F401 (the config, torch-free)
                            payload_config)


def checkpoint_bytes(model: nn.Module, config: ModelConfig) -> bytes:
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "config": config.to_dict(), "state_dict": state}, buffer)
    return buffer.getvalue()


def save_checkpoint(model: nn.Module, config: ModelConfig, path: str | os.PathLike) -> None:
    write_checkpoint_bytes(checkpoint_bytes(model, config), path)


def write_checkpoint_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-write never leaves a half checkpoint at `path`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def load_checkpoint(source: str | os.PathLike | bytes) -> tuple[nn.Module, ModelConfig]:
    """(model in eval mode, its config) from a file path or the bytes of one."""
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        payload = torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {source}") from None
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(f"not a readable checkpoint: {type(exc).__name__}") from None
    config = payload_config(payload)
    model = config.build()
    _check_fits(payload["state_dict"], model.state_dict(), config.arch)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, config


def _check_fits(state: dict, expected: dict, arch: str) -> None:
    """CheckpointError naming what differs when the weights `state` do not fit the model's
    `expected` ones (torch's own error is a paragraph)."""
    differences = [f"{what} {name}" for what, names in (
        ("missing", [k for k in expected if k not in state]),
        ("unexpected", [k for k in state if k not in expected]),
        ("misshapen", [k for k in expected if k in state
                       and getattr(state[k], "shape", None) != expected[k].shape]),
    ) for name in names]
    if differences:
        shown = ", ".join(differences[:2]) + (", ..." if len(differences) > 2 else "")
        raise CheckpointError(f"checkpoint weights do not fit its {arch} model "
                              f"({len(differences)} difference(s): {shown})")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (so keys carry no `module.` prefix)."""
    return getattr(model, "module", model)
