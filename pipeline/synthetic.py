"""A synthetic labelled corpus whose classes differ only by motion.

Every video shows a seamless random texture (low-pass filtered noise, periodic so it can wrap)
that moves: it scrolls left/right/up/down, zooms in/out, rotates clockwise/counter-clockwise, or
stays still, plus per-frame sensor noise. Texture, colours, scale, speed, start position, angle,
frame rate, resolution and duration are random, and the first frame is drawn from the same
distribution in every class, so no single frame tells the classes apart: only temporal modelling
can. Clips of a group share a "recording" (palette, texture scale, resolution, frame rate, noise),
like UCF50's groups. Files are real H.264 MP4s in the UCF50 layout.

Content comes in texture families: `noise` (filtered noise, soft blobs) and `shapes` (flat-coloured
discs and rectangles with hard edges over a smooth gradient, closer to photographed scenes). With
`content_split`, OUT/train/ is rendered from the `noise` family only and OUT/val/ from `shapes`
only, in recording groups of its own: validation shows content never seen in training, so only a
model that learned motion (not appearance) scores well there.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import ffmpeg
import numpy as np

from .errors import InvalidInput
from .ffmpeg_binary import ffmpeg_exe

# class name -> (dx, dy, zoom, spin): the sign of each motion, in pixels, log-scale and radians.
MOTIONS: dict[str, tuple[int, int, int, int]] = {
    "MoveLeft": (-1, 0, 0, 0),
    "MoveRight": (1, 0, 0, 0),
    "MoveUp": (0, -1, 0, 0),
    "MoveDown": (0, 1, 0, 0),
    "ZoomIn": (0, 0, 1, 0),
    "ZoomOut": (0, 0, -1, 0),
    "RotateCW": (0, 0, 0, 1),
    "RotateCCW": (0, 0, 0, -1),
    "Static": (0, 0, 0, 0),
}
DEFAULT_CLASSES = ("MoveLeft", "MoveRight", "MoveUp", "MoveDown")
# A camera-motion set: pans, tilts, zooms and static shots.
CAMERA_CLASSES = ("MoveLeft", "MoveRight", "MoveUp", "MoveDown", "ZoomIn", "ZoomOut", "Static")
TEXTURE_FAMILIES = ("noise", "shapes")
CONTENT_SPLIT = {"train": ("noise",), "val": ("shapes",)}
_RESOLUTIONS = ((128, 96), (112, 112), (160, 120), (96, 96))  # (width, height), even for yuv420p
_FRAME_RATES = (15, 20, 24, 25, 30)
_TILE = 128  # texture period in pixels


@dataclass(frozen=True)
class Recording:
    """What the clips of one group share."""

    palette: np.ndarray  # [3, 3] colour mixing
    texture_sigma: float  # low-pass width in cycles per tile: small = coarse blobs
    width: int
    height: int
    fps: int
    noise: float
    families: tuple[str, ...] = TEXTURE_FAMILIES  # texture families its clips are drawn from


@dataclass(frozen=True)
class ClipParams:
    duration_s: float
    speed: float  # pixels per second for moves
    zoom_rate: float  # log-scale per second
    spin_rate: float  # radians per second
    scale0: float
    angle0: float
    offset0: tuple[float, float]


def make_corpus(out: str, classes: tuple[str, ...] = DEFAULT_CLASSES, per_class: int = 8,
                groups: int = 4, seed: int = 0,
                progress: Callable[[str], None] | None = None,
                content_split: bool = False, val_per_class: int | None = None) -> list[str]:
    """Write `per_class` clips for each class under OUT/<Class>/; returns their URIs.

    With `content_split`, write OUT/train/ (`per_class` clips per class, `noise` textures) and
    OUT/val/ (`val_per_class` clips, default per_class // 3, `shapes` textures, other groups).
    """
    unknown = [name for name in classes if name not in MOTIONS]
    if unknown:
        raise InvalidInput(f"unknown class(es) {', '.join(unknown)}; choose from {', '.join(MOTIONS)}")
    if per_class < 1:
        raise InvalidInput("per_class must be >= 1")
    if content_split:
        val_count = val_per_class or max(1, per_class // 3)
        train = _write_corpus(f"{out.rstrip('/')}/train", classes, per_class, groups,
                              np.random.default_rng([seed, 0]), CONTENT_SPLIT["train"],
                              progress)
        return train + _write_corpus(f"{out.rstrip('/')}/val", classes, val_count, groups,
                                     np.random.default_rng([seed, 1]), CONTENT_SPLIT["val"],
                                     progress, first_group=groups + 1)
    return _write_corpus(out, classes, per_class, groups, np.random.default_rng(seed),
                         TEXTURE_FAMILIES[:1], progress)


def _write_corpus(out: str, classes: tuple[str, ...], per_class: int, groups: int,
                  rng: np.random.Generator, families: tuple[str, ...],
                  progress: Callable[[str], None] | None,
                  first_group: int = 1) -> list[str]:
    groups = max(1, min(groups, per_class))
    recordings = [_random_recording(rng, families) for _ in range(groups)]

    def render(motion: str, group: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        params = _random_clip(rng)
        return render_frames(motion, recordings[group], params, rng), recordings[group].fps

    return write_ucf50(out, classes, per_class, groups, render, rng, progress, first_group)


# (class, group index, rng) -> (uint8 frames [N, H, W, 3], fps) of one clip
Renderer = Callable[[str, int, np.random.Generator], tuple[np.ndarray, int]]


def write_ucf50(out: str, classes: tuple[str, ...], per_class: int, groups: int,
                render: Renderer, rng: np.random.Generator,
                progress: Callable[[str], None] | None = None, first_group: int = 1) -> list[str]:
    """Render and encode `per_class` clips of each class into OUT/<Class>/ in the UCF50 layout,
    clip c of a class in group c % groups (numbered from `first_group`); returns their URIs."""
    # Storage (fsspec, pyarrow) only when writing: the CLI's parser imports this module for MOTIONS.
    from .storage import filesystem

    groups = max(1, min(groups, per_class))
    fs, root = filesystem(out)
    written = []
    for name in classes:
        fs.makedirs(f"{root}/{name}", exist_ok=True)
        for clip_number in range(per_class):
            group = clip_number % groups
            frames, fps = render(name, group, rng)
            path = f"{root}/{name}/v_{name}_g{group + first_group:02d}_c{clip_number // groups + 1:02d}.mp4"
            with fs.open(path, "wb") as handle:
                handle.write(encode_h264(frames, fps))
            written.append(fs.unstrip_protocol(path))
            if progress:
                progress(written[-1])
    return written


def render_frames(motion: str, recording: Recording, params: ClipParams,
                  rng: np.random.Generator) -> np.ndarray:
    """uint8 frames [N, H, W, 3] of one clip of class `motion`."""
    dx, dy, zoom, spin = MOTIONS[motion]
    texture = _periodic_texture(rng, recording)
    count = max(2, round(params.duration_s * recording.fps))
    ys, xs = np.mgrid[0:recording.height, 0:recording.width].astype(np.float32)
    ys -= recording.height / 2
    xs -= recording.width / 2
    frames = np.empty((count, recording.height, recording.width, 3), np.uint8)
    for i in range(count):
        t = i / recording.fps
        scale = params.scale0 * np.exp(zoom * params.zoom_rate * t)
        angle = params.angle0 + spin * params.spin_rate * t
        cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
        # Output pixel -> texture coordinate. The scroll is in screen space (content moving right
        # means sampling further left), then rotation and zoom about the frame centre.
        screen_x = xs - dx * params.speed * t
        screen_y = ys - dy * params.speed * t
        tex_x = cos * screen_x - sin * screen_y + params.offset0[0]
        tex_y = sin * screen_x + cos * screen_y + params.offset0[1]
        image = _bilinear_wrap(texture, tex_y, tex_x)
        image += rng.normal(0.0, recording.noise, image.shape)
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def encode_h264(frames: np.ndarray, fps: int) -> bytes:
    """H.264/yuv420p MP4 bytes of uint8 frames [N, H, W, 3] (H and W even)."""
    count, height, width, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="vidpipe-enc-") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        cmd = (
            ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                         framerate=fps)
            .output(path, vcodec="libx264", pix_fmt="yuv420p", preset="veryfast", crf=20,
                    threads=1, movflags="+faststart")
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
            .compile(cmd=ffmpeg_exe())
        )
        cmd.remove("-nostdin")  # the frames come on stdin
        done = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg encode failed: {done.stderr.decode(errors='replace')[-300:]}")
        with open(path, "rb") as handle:
            return handle.read()


def _random_recording(rng: np.random.Generator, families: tuple[str, ...]) -> Recording:
    width, height = _RESOLUTIONS[rng.integers(len(_RESOLUTIONS))]
    return Recording(
        palette=rng.uniform(-1.0, 1.0, (3, 3)) + np.eye(3) * rng.uniform(0.2, 1.0),
        texture_sigma=float(rng.uniform(3.0, 10.0)),
        width=width,
        height=height,
        fps=int(rng.choice(_FRAME_RATES)),
        noise=float(rng.uniform(2.0, 8.0)),
        families=families,
    )


def _random_clip(rng: np.random.Generator) -> ClipParams:
    return ClipParams(
        duration_s=float(rng.uniform(1.5, 3.0)),
        speed=float(rng.uniform(15.0, 40.0)),
        zoom_rate=float(rng.uniform(0.25, 0.5)),
        spin_rate=float(rng.uniform(0.5, 1.2)),
        scale0=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
        angle0=float(rng.uniform(0.0, 2 * np.pi)),
        offset0=(float(rng.uniform(0, _TILE)), float(rng.uniform(0, _TILE))),
    )


def _periodic_texture(rng: np.random.Generator, recording: Recording) -> np.ndarray:
    """A [TILE, TILE, 3] float texture in 0..255 that tiles seamlessly, of one of the
    recording's families."""
    families = recording.families
    family = families[0] if len(families) == 1 else families[rng.integers(len(families))]
    if family == "shapes":
        return _shapes_texture(rng)
    return _noise_texture(rng, recording)


def _shapes_texture(rng: np.random.Generator) -> np.ndarray:
    """Flat-coloured discs and rectangles with hard edges over a smooth periodic gradient."""
    ys, xs = np.mgrid[0:_TILE, 0:_TILE].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (2, 3))
    base = rng.uniform(40, 215, 3)
    image = (base + 40 * np.sin(2 * np.pi * xs[..., None] / _TILE + phase[0])
             * np.cos(2 * np.pi * ys[..., None] / _TILE + phase[1]))
    for _ in range(int(rng.integers(12, 30))):
        cy, cx = rng.uniform(0, _TILE, 2)
        # Distances on the torus, so shapes wrap across the tile's edges.
        dy = np.abs((ys - cy + _TILE / 2) % _TILE - _TILE / 2)
        dx = np.abs((xs - cx + _TILE / 2) % _TILE - _TILE / 2)
        if rng.random() < 0.5:
            radius = rng.uniform(4, 20)
            mask = dy**2 + dx**2 <= radius**2
        else:
            half_h, half_w = rng.uniform(3, 18, 2)
            mask = (dy <= half_h) & (dx <= half_w)
        image[mask] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.float32)


def _noise_texture(rng: np.random.Generator, recording: Recording) -> np.ndarray:
    """Low-pass filtered noise (filtered in Fourier space, so it tiles seamlessly)."""
    freqs = np.fft.fftfreq(_TILE) * _TILE  # cycles per tile
    radius2 = freqs[:, None] ** 2 + freqs[None, :] ** 2
    lowpass = np.exp(-radius2 / (2 * recording.texture_sigma**2))
    fields = np.stack([
        np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(_TILE, _TILE))) * lowpass))
        for _ in range(3)
    ], axis=-1)
    fields /= fields.std() + 1e-8
    colours = fields @ recording.palette.T
    colours -= colours.min(axis=(0, 1))
    colours /= colours.max(axis=(0, 1)) + 1e-8
    return (colours * 255.0).astype(np.float32)


def _bilinear_wrap(texture: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    y0 = np.floor(ys)
    x0 = np.floor(xs)
    wy = (ys - y0)[..., None]
    wx = (xs - x0)[..., None]
    y0 = y0.astype(np.int64) % _TILE
    x0 = x0.astype(np.int64) % _TILE
    y1 = (y0 + 1) % _TILE
    x1 = (x0 + 1) % _TILE
    top = texture[y0, x0] * (1 - wx) + texture[y0, x1] * wx
    bottom = texture[y1, x0] * (1 - wx) + texture[y1, x1] * wx
    return top * (1 - wy) + bottom * wy
