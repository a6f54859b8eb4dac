"""Where tensors live. Every device decision is made here, so CPU and CUDA run the same code:
which device a model is on, moving clips there, reductions across training workers on the
process group's device (NCCL only reduces CUDA tensors), and mixed precision.

Imports only torch: the GPU checks in tests/gpu run it on a stock PyTorch CUDA image.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import nn


def pick(use_gpu: bool = True) -> torch.device:
    """CUDA when asked for and present, else the CPU."""
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def of(module: nn.Module) -> torch.device:
    """The device a module's parameters (or buffers) are on; the CPU for a module without any."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def collective_device() -> torch.device:
    """The device whose tensors the default process group can reduce: CUDA under NCCL (each rank
    on its current CUDA device), the CPU under gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """`values` reduced over all ranks of the default process group (as they are without one).

    The tensor is made on the group's device and the result brought back to the CPU, so callers
    never think about devices."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor.cpu().tolist()


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on `device` (bfloat16 on the CPU, float16 on CUDA), or nothing."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)



def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler | None:
    """The loss scaler of mixed-precision training on CUDA, or None (train in float32).

    Training's mixed precision is CUDA-only (float16 autocast, which needs the scaler); a CPU
    worker trains in float32, and the CLI refuses --amp without --gpus."""
    if not enabled or device.type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")
