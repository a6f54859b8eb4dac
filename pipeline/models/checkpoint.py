"""Checkpoints that carry their own preprocessing: architecture, class names, frames, size, sampling.

Inference reads these from the checkpoint, never from flags that could disagree with how the model
was trained. Files hold only tensors and plain values and load with `weights_only=True`, so loading
never unpickles arbitrary objects.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..errors import CheckpointError
from . import build_model, canonical_arch

FORMAT = "vidpipe-checkpoint/1"
SAMPLING = "uniform"  # round(linspace(0, n-1, frames)) over the decoded frames of a window


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    class_names: tuple[str, ...]
    frames: int = 20
    size: int = 64
    sampling: str = SAMPLING
    # The time span one clip covered in training (the training clips' median duration, or the
    # training window). Inference cuts longer videos into windows of this length by default.
    clip_seconds: float | None = None
    dataset_fingerprint: str = ""  # which videos trained it (clips.dataset_fingerprint)
    # Short hashes of each training video (clips.video_digests): `evaluate` warns on overlap.
    training_videos: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def window_seconds(self, requested: float | None = None) -> float | None:
        """The inference window: `requested` if given (0 = the whole video, returned as None),
        else the clip duration the model was trained on (None: whole videos)."""
        if requested is None:
            return self.clip_seconds
        return requested if requested > 0 else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        # `extra` was written (always empty) by checkpoints before clip_seconds existed.
        unknown = set(data) - known - {"extra"}
        if unknown:
            raise CheckpointError(f"checkpoint config has unknown field(s): {', '.join(sorted(unknown))}")
        data = {key: value for key, value in data.items() if key in known}
        data["class_names"] = tuple(data["class_names"])
        data["training_videos"] = tuple(data.get("training_videos", ()))
        data["arch"] = canonical_arch(data["arch"])
        if data.get("sampling", SAMPLING) != SAMPLING:
            raise CheckpointError(f"checkpoint was trained with sampling '{data['sampling']}'; "
                                  f"this vidpipe samples '{SAMPLING}' only")
        return cls(**data)

    def build(self) -> nn.Module:
        return build_model(self.arch, self.num_classes, self.frames, self.size)


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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a vidpipe checkpoint (missing format marker)")
    config = ModelConfig.from_dict(payload["config"])
    model = config.build()
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, config


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (so keys carry no `module.` prefix)."""
    return getattr(model, "module", model)
