"""Untrained model checkpoints for tests that need a model to run, not one that is right."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.models.checkpoint import ModelConfig, save_checkpoint
from pipeline.synthetic import DEFAULT_CLASSES

# The synthetic motion corpus's classes as a labelled corpus names them: sorted folder names.
MOTION_CLASSES = tuple(sorted(DEFAULT_CLASSES))


def untrained_checkpoint(path: Path, classes: tuple[str, ...] = ("A", "B"),
                         arch: str = "cnn3d_gru32", seed: int = 0, **config) -> Path:
    """A fresh `arch` model's checkpoint at `path` (its folder created), its weights drawn from
    `seed`: the same weights on every run. `config`: ModelConfig's other fields (frames, size,
    clip_seconds, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model_config = ModelConfig(arch, tuple(classes), **config)
    torch.manual_seed(seed)
    save_checkpoint(model_config.build(), model_config, path)
    return path
