"""Spatial(-temporal) feature extractors: clip [B, 3, T, H, W] -> sequence [B, T', F].

`cnn3d` is the paper's homogeneous 3D CNN (three 3x3x3 conv blocks, 2x2x2 pools, dropout after the
first block). `cnn3dgn` and `cnn3dbn` are the same with group or batch normalisation after each
convolution (our variants, not in the paper): they keep the features that reach the temporal head
at unit scale, so they neither die (all-zero ReLUs) nor drift while the head learns. `cnn3dbnmix`
adds MixStyle after the first two blocks, so that content unlike the training set's (new textures,
cameras) does not throw off the statistics BatchNorm stored. `cnn2d` applies a 2D CNN of the same
widths to each frame independently, so any temporal modelling is left to the head.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (16, 32, 64)


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU, in place when no gradient is recorded (inference): a convolution's fresh output is
    overwritten rather than copied, which saves a memory-bound pass over the largest tensors."""
    return torch.relu(x) if torch.is_grad_enabled() else torch.relu_(x)


class MaxPool3d2(nn.MaxPool3d):
    """nn.MaxPool3d(2), whose inference runs as three pairwise maxima of strided views: the same
    values (sizes floored as MaxPool3d does), about 6x faster on CPU than ATen's max_pool3d,
    which also computes the indices only backward needs (tests/benchmarks/bench_model.py).
    Training keeps nn.MaxPool3d, so gradients are routed exactly as before."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (self.training or x.requires_grad):
            return super().forward(x)
        t, h, w = (size // 2 * 2 for size in x.shape[-3:])
        x = x[..., :t, :h, :w]
        x = torch.maximum(x[..., 0::2, :, :], x[..., 1::2, :, :])
        x = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(x[..., 0::2], x[..., 1::2])


class Cnn3d(nn.Module):
    def __init__(self, dropout: float = 0.25):
        super().__init__()
        self.conv1 = nn.Conv3d(3, WIDTHS[0], kernel_size=3, padding=1)
        self.pool1 = MaxPool3d2()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(WIDTHS[0], WIDTHS[1], kernel_size=3, padding=1)
        self.pool2 = MaxPool3d2()
        self.conv3 = nn.Conv3d(WIDTHS[1], WIDTHS[2], kernel_size=3, padding=1)
        self.pool3 = MaxPool3d2()
        self.mix1, self.mix2 = nn.Identity(), nn.Identity()  # MixStyle in cnn3dbnmix

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.mix1(self.pool1(relu(self.conv1(clip)))))
        x = self.mix2(self.pool2(relu(self.conv2(x))))
        x = self.pool3(relu(self.conv3(x)))  # [B, C, T', H', W']
        # The paper's Reshape: one feature vector per remaining time step.
        return x.permute(0, 2, 1, 3, 4).flatten(2)  # [B, T', C*H'*W']

    @staticmethod
    def output_shape(frames: int, size: int) -> tuple[int, int]:
        t, s = frames, size
        for _ in WIDTHS:
            t, s = t // 2, s // 2
        return t, WIDTHS[-1] * s * s


class Cnn3dBn(Cnn3d):
    """The paper's 3D CNN with a normalisation between each convolution and its ReLU."""

    def __init__(self, dropout: float = 0.25):
        super().__init__(dropout)
        for index, width in enumerate(WIDTHS, start=1):
            conv = getattr(self, f"conv{index}")
            # The convolution's bias is redundant before a normalisation: drop it.
            setattr(self, f"conv{index}", nn.Sequential(
                nn.Conv3d(conv.in_channels, width, kernel_size=3, padding=1, bias=False),
                self.norm(width)))

    @staticmethod
    def norm(channels: int) -> nn.Module:
        return nn.BatchNorm3d(channels)


class Cnn3dGn(Cnn3dBn):
    """The same with GroupNorm (8 groups): statistics of each clip alone, so training and
    inference normalise alike whatever the batch, the number of workers or the content."""

    @staticmethod
    def norm(channels: int) -> nn.Module:
        return nn.GroupNorm(8, channels)


class MixStyle(nn.Module):
    """MixStyle (Zhou et al., "Domain Generalization with MixStyle", ICLR 2021): in training, with
    probability `p` per batch, each clip's per-channel feature mean and standard deviation (its
    "style": texture, contrast) are replaced by a mix with another clip's of the batch, with a weight
    drawn from Beta(alpha, alpha). The layers after it learn not to rely on those statistics, which
    shift on content unlike the training set's. No parameters; the identity at inference."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or torch.rand(()).item() > self.p:
            return x
        dims = tuple(range(2, x.dim()))  # per clip and channel: over time and space
        mean = x.mean(dim=dims, keepdim=True).detach()
        std = (x.var(dim=dims, keepdim=True) + self.eps).sqrt().detach()
        weight = torch.distributions.Beta(self.alpha, self.alpha).sample(
            (x.shape[0],) + (1,) * (x.dim() - 1)).to(x.device, x.dtype)
        other = torch.randperm(x.shape[0], device=x.device)
        mixed_mean = weight * mean + (1 - weight) * mean[other]
        mixed_std = weight * std + (1 - weight) * std[other]
        return (x - mean) / std * mixed_std + mixed_mean


class Cnn3dBnMix(Cnn3dBn):
    """`cnn3dbn` with MixStyle after its first two blocks (see MixStyle)."""

    def __init__(self, dropout: float = 0.25):
        super().__init__(dropout)
        self.mix1, self.mix2 = MixStyle(), MixStyle()


class Cnn2d(nn.Module):
    def __init__(self, dropout: float = 0.25):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(WIDTHS[0], WIDTHS[1], kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(WIDTHS[1], WIDTHS[2], kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = clip.shape
        x = clip.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        x = self.dropout(self.pool(torch.relu(self.conv1(x))))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.pool(torch.relu(self.conv3(x)))
        return x.reshape(batch, frames, -1)  # [B, T, C*H'*W']

    @staticmethod
    def output_shape(frames: int, size: int) -> tuple[int, int]:
        s = size
        for _ in WIDTHS:
            s //= 2
        return frames, WIDTHS[-1] * s * s


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as FFmpeg's gray conversion
MOTION_WIDTHS = (16, 32, 64, 64)


class MotionStem(nn.Module):
    """What the motion backbone sees: clip [B, 3, T, H, W] -> [B, 2, T, H, W], the clip's luma
    standardised over the whole clip, and its difference from the previous frame (zero for the
    first). Colour is dropped (a grayscale camera and a colour one give the same input), the
    standardisation removes exposure and contrast, and the difference shows a small motion on
    its own channel instead of leaving the first convolution to find it between frames."""

    def __init__(self, difference_gain: float = 4.0):
        super().__init__()
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1, 1), persistent=False)
        self.difference_gain = difference_gain

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        gray = (clip * self.luma).sum(dim=1, keepdim=True)
        dims = (1, 2, 3, 4)
        gray = (gray - gray.mean(dim=dims, keepdim=True)) / (gray.std(dim=dims, keepdim=True) + 1e-3)
        difference = torch.diff(gray, dim=2, prepend=gray[:, :, :1])
        return torch.cat([gray, difference * self.difference_gain], dim=1)


def _conv_bn(in_channels: int, out_channels: int, kernel=3, stride=1) -> nn.Sequential:
    """Conv3d + BatchNorm3d (a pair that models.for_inference folds into one convolution)."""
    kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel, stride=stride,
                                   padding=tuple(k // 2 for k in kernel), bias=False),
                         nn.BatchNorm3d(out_channels))


class Motion3d(nn.Module):
    """Our default backbone (not the paper's): a small 3D CNN over the MotionStem's luma and
    frame differences. Four BatchNorm blocks (16, 32, 64, 64 channels; the first 5x5 with stride
    2 in space, computed at full resolution on the stem's differences), then the space averaged
    into a 2x2 grid per time step: [B, T/4, 256] for the temporal head (T/4: pooled twice in time). Averaging keeps the
    features that reach the head few and independent of texture position; the grid keeps where
    things move (a zoom moves the four quarters apart). 182k parameters (332k with the GRU 128
    head), about 3x fewer
    multiply-adds per clip than the paper's backbone. See "Training recipe" in README.md."""

    GRID = 2

    def __init__(self):
        super().__init__()
        widths = MOTION_WIDTHS
        self.stem = MotionStem()
        self.conv1 = _conv_bn(2, widths[0], (3, 5, 5), (1, 2, 2))  # T x H/2 x W/2
        self.pool1 = MaxPool3d2()
        self.conv2 = _conv_bn(widths[0], widths[1])
        self.pool2 = MaxPool3d2()
        self.conv3 = _conv_bn(widths[1], widths[2])
        self.pool3 = nn.MaxPool3d((1, 2, 2))
        self.conv4 = _conv_bn(widths[2], widths[3])
        self.grid = nn.AdaptiveAvgPool3d((None, self.GRID, self.GRID))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = self.pool1(relu(self.conv1(self.stem(clip))))
        x = self.pool2(relu(self.conv2(x)))
        x = self.pool3(relu(self.conv3(x)))
        x = self.grid(relu(self.conv4(x)))  # [B, C, T', 2, 2]
        return x.permute(0, 2, 1, 3, 4).flatten(2)  # [B, T', C*4]

    @staticmethod
    def output_shape(frames: int, size: int) -> tuple[int, int]:
        spatial = size // 2 // 2 // 2 // 2  # stride, pool1, pool2, pool3: the grid needs >= 1
        steps = frames // 2 // 2
        return (steps, MOTION_WIDTHS[-1] * Motion3d.GRID ** 2) if spatial >= 1 else (steps, 0)


BACKBONES = {"motion3d": Motion3d, "cnn3d": Cnn3d, "cnn3dbn": Cnn3dBn, "cnn3dbnmix": Cnn3dBnMix, "cnn3dgn": Cnn3dGn,
             "cnn2d": Cnn2d}
