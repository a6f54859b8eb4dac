"""The training recipe's settings (`TrainSettings`) without torch: the CLI shows their defaults in
`vidpipe train --help` before anything imports torch. training.py runs them (and re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_BATCH = 4  # the paper's batch: `lr` is the learning rate for a global batch of this size
# The global batch up to which the peak learning rate grows linearly; beyond it the peak stays at
# lr x 16 / 4. Measured (tests/benchmarks/lr_scaling.py, photo-camera family): linear scaling
# held to 16 clips and lost accuracy at 32 and 64 (0.943, 0.914) where a peak of about 0.003-0.004
# kept it (0.986 at 32, 0.971 at 64).
LINEAR_SCALING_LIMIT = 16


def lr_scale(global_batch: int) -> float:
    """The factor on `TrainSettings.lr` for a global batch (batch size x workers)."""
    return min(global_batch, LINEAR_SCALING_LIMIT) / REFERENCE_BATCH



@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 15  # at least; see min_steps
    # A small corpus has few steps per epoch (168 clips over 2 workers: 21), so a schedule set in
    # epochs alone gives it too few updates: training runs max(epochs, the epochs that make
    # `min_steps` optimizer steps). 0: exactly `epochs` (what `--epochs N` asks for).
    min_steps: int = 600
    batch_size: int = 4  # per worker
    lr: float = 1e-3  # at a global batch of REFERENCE_BATCH; scaled with the global batch (lr_scale)
    weight_decay: float = 0.05  # AdamW, decoupled
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero at the last epoch
    # Adam moves every weight by about lr per step whatever its fan-in, so a layer's output moves by
    # about fan_in * lr: a weight matrix with a larger fan-in than this learns at lr * this / fan_in.
    fan_in_reference: int = 512
    seed: int = 0
    crop_scale: float = 0.6  # random resized crops keep between this share of the area and all of it
    brightness: float = 0.2  # photometric jitter: factors drawn from [1 - x, 1 + x] per clip
    contrast: float = 0.2
    saturation: float = 0.2
    # Temporal jitter: training clips are decoded with pool_frames() frames over the same span, and
    # each step keeps `frames` of them, evenly spaced over a random stretch of between (1 - this)
    # and all of it (start and speed jitter). 0: the frames inference sees, as they are.
    temporal_jitter: float = 0.3
    # Mixed precision on CUDA workers: float16 autocast with a loss scaler (devices.grad_scaler).
    # CUDA only: the CLI refuses --amp without --gpus, and a CPU worker trains in float32.
    amp: bool = False
