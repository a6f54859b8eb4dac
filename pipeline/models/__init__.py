"""The model family: a backbone composed with a temporal head, by name.

`build_model("cnn3d_gru128", num_classes)` reads as backbone `cnn3d` + head `gru128`; `cnn3d_gru`
is the paper's model, parameter for parameter, and the paper's other variants are its backbones
(`cnn3d`, `cnn2d`) with the other heads. Our variants: `motion3d_gru` (a small 3D CNN over luma
and frame differences, pooled to a 2x2 grid, with the paper's GRU 128 head), the default of
`vidpipe train`; `cnn3dbn_gru` (the paper's model with batch normalisation after each
convolution), `cnn3dgn_gru` (group normalisation) and `cnn3dbnmix_gru` (batch normalisation plus
MixStyle; the default before motion3d). See "Training recipe" in README.md. Input
[B, 3, T, H, W] float in [0, 1]; output logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import devices
# The names live in a module without torch (the CLI checks --arch with them); re-exported here.
from ..architectures import (ALIASES, DEFAULT_ARCH, PAPER_ARCH, canonical_arch,  # noqa: F401
                             list_models)
from ..errors import InvalidInput
from .backbones import BACKBONES
from .heads import build_head

TOP_K = 5  # predictions keep the k most likely classes (k <= number of classes)


# Input centring lives in the model (as buffers, not parameters) so that no caller can pair the
# weights with other preprocessing. Without it, ReLU networks fed all-positive [0, 1] pixels
# collapse to the class prior on our data.
INPUT_MEAN = 0.5
INPUT_STD = 0.25


class ActionClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("input_std", torch.tensor(INPUT_STD), persistent=False)
        self.backbone = backbone
        self.head = head

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone((clip - self.input_mean) / self.input_std))

    @property
    def embedding_size(self) -> int:
        return self.head.embedding_size

    def logits_and_embedding(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the clip representation they come from (head.embed), not normalised."""
        embedding = self.head.embed(self.backbone((clip - self.input_mean) / self.input_std))
        return self.head.classifier(embedding), embedding


def build_model(arch: str, num_classes: int, frames: int = 20, size: int = 64) -> nn.Module:
    """A fresh model of `arch` for clips of `frames` x `size` x `size`."""
    backbone_name, head_name = canonical_arch(arch).split("_", 1)
    backbone_cls = BACKBONES[backbone_name]
    steps, features = backbone_cls.output_shape(frames, size)
    if steps < 1 or features < 1:
        raise InvalidInput(f"{arch} needs larger clips than {frames} x {size} x {size}")
    return ActionClassifier(backbone_cls(), build_head(head_name, features, num_classes))


class InferenceModel(nn.Module):
    """An eval-only copy of a model, made faster for inference with the same outputs up to float
    rounding: each BatchNorm folded into the convolution before it, and on the CPU the
    channels-last-3d memory format (oneDNN's fastest 3D convolutions here). It takes and returns
    what the model does; `for_inference` makes one."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        self.model, self.channels_last = model, channels_last

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(self._laid_out(clip))

    @property
    def embedding_size(self) -> int:
        return self.model.embedding_size

    def logits_and_embedding(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.logits_and_embedding(self._laid_out(clip))

    def _laid_out(self, clip: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        return clip


def for_inference(model: nn.Module, device: torch.device | str | None = None) -> InferenceModel:
    """A copy of `model` for classifying on `device` (default: the model's); see InferenceModel.
    The given model is left as it is (it may still be trained)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    device = torch.device(device) if device is not None else devices.of(model)
    fused = copy.deepcopy(model).eval().to(device)
    for parent in fused.modules():
        if isinstance(parent, nn.Sequential) and len(parent) == 2 \
                and isinstance(parent[0], nn.Conv3d) and isinstance(parent[1], nn.BatchNorm3d):
            parent[0], parent[1] = fuse_conv_bn_eval(parent[0], parent[1]), nn.Identity()
    channels_last = device.type == "cpu" and any(isinstance(m, nn.Conv3d) for m in fused.modules())
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last_3d)
    return InferenceModel(fused, channels_last).eval()


def clips_to_tensor(clips: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 clips [B, T, H, W, 3] (or one clip [T, H, W, 3]) -> float [B, 3, T, H, W] in [0, 1].

    With a CUDA `device` the uint8 batch (a quarter of the float bytes) is copied from pinned
    memory without blocking and converted on the device. `clips` may be a uint8 tensor already
    (decoded on the GPU, decode_nvdec.py): it is converted where it is.
    """
    batch = clips if torch.is_tensor(clips) else torch.from_numpy(np.ascontiguousarray(clips))
    if batch.ndim == 4:
        batch = batch.unsqueeze(0)
    if device is not None and torch.device(device).type == "cuda" and batch.device.type == "cpu":
        batch = batch.pin_memory().to(device, non_blocking=True)
    return batch.permute(0, 4, 1, 2, 3).float().div_(255.0)


# On CPU the forward pass runs in batches of at most this many clips: at 20x64x64, one thread,
# batches of 2 reached 2.5-3x the clips/s of batches of 16 (and beat 1, 3, 4 and 8) in four
# interleaved runs (tests/benchmarks/bench_model.py; large batches' 3D-convolution activations
# leave the cache). Probabilities are the same up to float rounding.
CPU_MAX_BATCH = 2


@dataclass(frozen=True)
class Predictions:
    """What the model says about N clips: class probabilities float32 [N, C] and, when asked
    for, each clip's representation (head.embed) L2-normalised, float32 [N, embedding_size]."""

    probs: np.ndarray
    embeddings: np.ndarray | None = None


@torch.inference_mode()
def predict(model: nn.Module, clips: np.ndarray, batch_size: int = 16,
            mixed_precision: bool = False, embeddings: bool = False) -> Predictions:
    """Predictions for uint8 clips [N, T, H, W, 3], on the model's device (`mixed_precision`:
    float16 on CUDA, bfloat16 on the CPU); `embeddings` needs a model with
    `logits_and_embedding` (ActionClassifier, InferenceModel).

    The one place where clips become probabilities: inference, evaluation, validation and the
    MLflow pyfunc all call it (or predict_probs), so they cannot disagree.
    """
    model.eval()
    device = devices.of(model)
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_MAX_BATCH)
    probs, vectors = [], []
    for start in range(0, len(clips), batch_size):
        batch = clips_to_tensor(clips[start:start + batch_size], device).to(device)
        single = device.type == "cpu" and len(batch) == 1
        if single:  # ATen runs a batch of one 3D convolution without oneDNN, ~3x slower per clip
            batch = torch.cat([batch, batch])
        with devices.autocast(device, mixed_precision):
            if embeddings:
                logits, embedding = model.logits_and_embedding(batch)
            else:
                logits, embedding = model(batch), None
        keep = 1 if single else len(batch)
        probs.append(torch.softmax(logits[:keep].float(), dim=1).cpu().numpy())
        if embedding is not None:
            vectors.append(F.normalize(embedding[:keep].float(), dim=1).cpu().numpy())
    if not probs:
        return Predictions(np.zeros((0, 0), np.float32),
                           np.zeros((0, 0), np.float32) if embeddings else None)
    return Predictions(np.concatenate(probs), np.concatenate(vectors) if embeddings else None)


def predict_probs(model: nn.Module, clips: np.ndarray, batch_size: int = 16,
                  mixed_precision: bool = False) -> np.ndarray:
    """Class probabilities float32 [N, C] for uint8 clips [N, T, H, W, 3]: `predict` without
    embeddings (any model, DDP-wrapped ones included)."""
    return predict(model, clips, batch_size, mixed_precision).probs


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
