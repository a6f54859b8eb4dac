"""Training the classifier: decoding a labelled corpus into clips, augmentation, the epoch loop.

The pieces (clip loading, augmentation, one epoch, prediction) are plain functions over arrays so
that any engine can drive them; `fit` is the single-process engine used by `vidpipe train`.
Defaults follow the paper: Adam, lr 0.001, batch 4, 20 frames at 64x64.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .corpus import LabelledVideo
from .frames import VideoDecodeError, sample_clip
from .models import clips_to_tensor
from .models.checkpoint import ModelConfig


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    crop_pad: int = 4  # random crops: pad by this many pixels, crop back to size
    brightness: float = 0.2  # random brightness factor in [1 - b, 1 + b]


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    clips_per_s: float
    val_accuracy: float | None = None
    val_loss: float | None = None


@dataclass
class LabelledClips:
    """Decoded clips uint8 [N, T, H, W, 3] with label indices [N], and the videos that failed."""

    clips: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_clips(videos: Sequence[LabelledVideo], class_names: Sequence[str], frames: int,
               size: int) -> LabelledClips:
    """Decode every video once with the same sampling as inference; bad videos are skipped
    and reported, never fatal."""
    clips, labels, skipped = [], [], []
    for video in videos:
        try:
            clips.append(sample_clip(video.uri, num_frames=frames, size=(size, size)))
            labels.append(class_names.index(video.label))
        except VideoDecodeError as exc:
            skipped.append((video.uri, str(exc)))
    if not clips:
        return LabelledClips(np.zeros((0, frames, size, size, 3), np.uint8),
                             np.zeros(0, np.int64), skipped)
    return LabelledClips(np.stack(clips), np.asarray(labels, np.int64), skipped)


def augment(clips: np.ndarray, rng: np.random.Generator, settings: TrainSettings) -> torch.Tensor:
    """Motion-preserving augmentation of uint8 clips [B, T, H, W, 3] -> float [B, 3, T, H, W].

    One random crop and one brightness factor per clip, the same for all its frames. No
    horizontal flip: it would turn MoveLeft into MoveRight.
    """
    batch, _, height, width, _ = clips.shape
    pad = settings.crop_pad
    out = np.empty_like(clips)
    if pad:
        padded = np.pad(clips, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        for i in range(batch):
            dy, dx = rng.integers(0, 2 * pad + 1, size=2)
            out[i] = padded[i, :, dy:dy + height, dx:dx + width]
    else:
        out[:] = clips
    tensor = clips_to_tensor(out)
    factors = rng.uniform(1 - settings.brightness, 1 + settings.brightness, size=batch)
    tensor *= torch.from_numpy(factors.astype(np.float32)).view(batch, 1, 1, 1, 1)
    return tensor.clamp_(0.0, 1.0)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, clips: np.ndarray,
                labels: np.ndarray, settings: TrainSettings, rng: np.random.Generator
                ) -> tuple[float, float, float]:
    """One pass in random order; returns (mean loss, accuracy, clips/s)."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    order = rng.permutation(len(clips))
    total_loss, correct, started = 0.0, 0, time.perf_counter()
    for start in range(0, len(order), settings.batch_size):
        index = order[start:start + settings.batch_size]
        inputs = augment(clips[index], rng, settings)
        targets = torch.from_numpy(labels[index])
        optimizer.zero_grad()
        logits = model(inputs)
        loss = loss_fn(logits, targets)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(index)
        correct += int((logits.argmax(1) == targets).sum())
    seconds = time.perf_counter() - started
    count = max(1, len(order))
    return total_loss / count, correct / count, len(order) / max(seconds, 1e-9)


@torch.no_grad()
def predict_probs(model: nn.Module, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Class probabilities [N, C] for uint8 clips [N, T, H, W, 3]."""
    model.eval()
    outputs = [
        torch.softmax(model(clips_to_tensor(clips[start:start + batch_size])), dim=1).numpy()
        for start in range(0, len(clips), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def validation_stats(model: nn.Module, clips: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on un-augmented clips."""
    probs = predict_probs(model, clips)
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    return float((probs.argmax(1) == labels).mean()), loss


def fit(config: ModelConfig, train: LabelledClips, val: LabelledClips | None,
        settings: TrainSettings, on_epoch: Callable[[EpochStats], None] | None = None
        ) -> tuple[nn.Module, list[EpochStats]]:
    """Single-process training of a fresh model; returns it with per-epoch statistics."""
    if len(train.clips) == 0:
        raise ValueError("no training clips could be decoded")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = config.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    history = []
    for epoch in range(1, settings.epochs + 1):
        loss, accuracy, speed = train_epoch(model, optimizer, train.clips, train.labels,
                                            settings, rng)
        stats = EpochStats(epoch, loss, accuracy, speed)
        if val is not None and len(val.clips):
            stats.val_accuracy, stats.val_loss = validation_stats(model, val.clips, val.labels)
        history.append(stats)
        if on_epoch:
            on_epoch(stats)
    model.eval()
    return model, history
