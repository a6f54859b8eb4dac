"""Benchmark corpus families: labelled motion corpora of different kinds, each with a held-out test set.

A recipe tuned on one kind of footage says little about another, so the recipe table
(tests/benchmarks/recipe_table.py) trains and tests on several families; some were used to choose
the recipe and the others never were (FAMILIES[name].tuned says which). Each family writes
OUT/train/ (UCF50 layout, `per_class` videos per class in recording groups) and OUT/test/
(`test_per_class` videos per class drawn from content no training video shows: other photographs,
another texture family, another colour mode):

- `texture`: the synthetic textures of synthetic.py (training: filtered noise; test: flat shapes).
- `photo-camera`: a camera panning, tilting, zooming or holding still over natural photographs,
  160x120 at 25 fps, 2-3.6 s, travelling 25-80% of the frame over a clip, with gain changes and
  sensor noise (the shape of a user's first footage).
- `photo-objects`: a still camera over a natural photograph while one object (an elliptical cut-out
  of another photograph) moves left, right, up, down or stays.
- `gray-varied`: camera motion with speeds, durations, resolutions and frame rates varied widely;
  training videos in colour, test videos in grayscale (night and IR cameras are grayscale).

Photographs come from the packages already installed (scikit-image's sample data and matplotlib's
sample photograph): no download. Training and test photographs are disjoint sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput
from .synthetic import (CAMERA_CLASSES, CONTENT_SPLIT, Renderer, _random_clip,
                        _random_recording, render_frames, write_ucf50)

OBJECT_CLASSES = ("MoveDown", "MoveLeft", "MoveRight", "MoveUp", "Static")
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "camera", "brick", "gravel",
                "cell")
TEST_PHOTOS = ("chelsea", "immunohistochemistry", "retina", "grace_hopper", "coins", "grass",
               "moon", "clock")


@dataclass(frozen=True)
class Family:
    classes: tuple[str, ...]
    tuned: bool  # True: the recipe was chosen looking at this family; False: held out from tuning
    description: str


FAMILIES: dict[str, Family] = {
    "texture": Family(CAMERA_CLASSES, True, "synthetic textures; test: another texture family"),
    "photo-camera": Family(CAMERA_CLASSES, True,
                           "camera motion over photographs; test: other photographs"),
    "photo-objects": Family(OBJECT_CLASSES, False,
                            "an object moving over a photograph; test: other photographs"),
    "gray-varied": Family(CAMERA_CLASSES, False,
                          "varied speed, length, size and frame rate; train colour, test grayscale"),
}


def make_family(out: str, family: str, per_class: int = 24, test_per_class: int = 10,
                groups: int = 4, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> list[str]:
    """Write OUT/train and OUT/test of `family`; returns the URIs written."""
    if family not in FAMILIES:
        raise InvalidInput(f"unknown family '{family}'; choose one of: {', '.join(FAMILIES)}")
    root = out.rstrip("/")
    classes = FAMILIES[family].classes
    written = []
    for split, count, photos, group_base in (("train", per_class, TRAIN_PHOTOS, 1),
                                             ("test", test_per_class, TEST_PHOTOS, groups + 1)):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, len(family)])
        renderer = _renderer(family, split, photos, rng)
        written += write_ucf50(f"{root}/{split}", classes, count, groups, renderer, rng,
                               progress, group_base)
    return written


def _renderer(family: str, split: str, photos: tuple[str, ...], rng: np.random.Generator) -> Renderer:
    if family == "texture":
        textures = CONTENT_SPLIT["train" if split == "train" else "val"]
        recordings = [_random_recording(rng, textures) for _ in range(8)]

        def texture(motion, group, rng):
            recording = recordings[group]
            return render_frames(motion, recording, _random_clip(rng), rng), recording.fps
        return texture
    images = [load_photo(name) for name in photos]
    # A recording group is a pair of photographs: a held-out group shows photographs unseen.
    by_group = [images[i::4] for i in range(4)]
    if family == "photo-camera":
        return lambda motion, group, rng: _camera_clip(
            motion, by_group[group % 4], rng, size=(160, 120), fps=25, seconds=(2.0, 3.6),
            travel=(0.25, 0.8), gray=False)
    if family == "gray-varied":
        sizes = ((96, 72), (128, 96), (160, 120), (240, 180), (320, 240))

        def varied(motion, group, rng):
            size = sizes[rng.integers(len(sizes))]
            fps = int(rng.choice((10, 15, 24, 30, 50)))
            return _camera_clip(motion, by_group[group % 4], rng, size=size, fps=fps,
                                seconds=(1.5, 5.0), travel=(0.15, 1.0), gray=split == "test")
        return varied
    if family == "photo-objects":
        return lambda motion, group, rng: _object_clip(
            motion, by_group[group % 4], images, rng, size=(160, 120), fps=25,
            seconds=(2.0, 3.6), travel=(0.3, 0.8))
    raise InvalidInput(f"unknown family '{family}'")


def load_photo(name: str) -> np.ndarray:
    """A packaged photograph as float32 RGB [H, W, 3] in 0..255."""
    if name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image

        image = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    else:
        try:
            import skimage.data
        except ImportError:
            raise InvalidInput("the photograph families need scikit-image, whose package ships "
                               "the photographs (pip install scikit-image)") from None
        image = getattr(skimage.data, name)()
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    return image * (255.0 / max(1.0, float(image.max()))) if image.max() <= 1.0 else image


# class -> (dx, dy, zoom): the direction the picture's content moves in (zoom > 0: it grows).
_CAMERA = {"MoveLeft": (-1, 0, 0), "MoveRight": (1, 0, 0), "MoveUp": (0, -1, 0),
           "MoveDown": (0, 1, 0), "ZoomIn": (0, 0, 1), "ZoomOut": (0, 0, -1), "Static": (0, 0, 0)}


def _camera_clip(motion: str, photos: list[np.ndarray], rng: np.random.Generator,
                 size: tuple[int, int], fps: int, seconds: tuple[float, float],
                 travel: tuple[float, float], gray: bool) -> tuple[np.ndarray, int]:
    """A camera over one photograph: its content moves by `travel` of the frame (pans, tilts) or
    grows/shrinks by that share (zooms) over the clip."""
    width, height = size
    photo = photos[rng.integers(len(photos))]
    dx, dy, zoom = _CAMERA[motion]
    count = max(2, round(rng.uniform(*seconds) * fps))
    distance = rng.uniform(*travel)  # share of the frame
    shift_x, shift_y = dx * distance * width, dy * distance * height  # output pixels, whole clip
    zoom_factor = np.exp(zoom * np.log1p(distance))  # final scale of the content
    # Photo pixels per output pixel, as large as lets the whole path fit inside the photograph.
    extent_w = width * max(1.0, 1.0 / zoom_factor) + abs(shift_x)
    extent_h = height * max(1.0, 1.0 / zoom_factor) + abs(shift_y)
    fit = min(photo.shape[1] / extent_w, photo.shape[0] / extent_h) * 0.98
    scale0 = fit * rng.uniform(0.5, 1.0)
    # The path's centre is placed at random where the whole path stays inside.
    margin_x = (photo.shape[1] - scale0 * extent_w) / 2
    margin_y = (photo.shape[0] - scale0 * extent_h) / 2
    centre_x = photo.shape[1] / 2 + rng.uniform(-margin_x, margin_x)
    centre_y = photo.shape[0] / 2 + rng.uniform(-margin_y, margin_y)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys - height / 2 + 0.5, xs - width / 2 + 0.5
    frames = np.empty((count, height, width, 3), np.uint8)
    gains = _gains(count, rng)
    noise = rng.uniform(1.0, 5.0)
    for i in range(count):
        progress = i / (count - 1) - 0.5  # -0.5 .. 0.5: the path is centred on (centre_x, centre_y)
        scale = scale0 / zoom_factor ** (progress + 0.5)
        # Content moving right by s output pixels = the view moving left by s * scale photo pixels.
        view_x = centre_x - progress * shift_x * scale0
        view_y = centre_y - progress * shift_y * scale0
        image = _bilinear(photo, view_y + ys * scale, view_x + xs * scale)
        frames[i] = _finish(image, gains[i], noise, gray, rng)
    return frames, fps


def _object_clip(motion: str, backgrounds: list[np.ndarray], all_photos: list[np.ndarray],
                 rng: np.random.Generator, size: tuple[int, int], fps: int,
                 seconds: tuple[float, float], travel: tuple[float, float]
                 ) -> tuple[np.ndarray, int]:
    """A still view of one photograph with an elliptical cut-out of another moving across it."""
    width, height = size
    background = backgrounds[rng.integers(len(backgrounds))]
    scale = min(background.shape[1] / width, background.shape[0] / height) * rng.uniform(0.4, 0.95)
    left = rng.uniform(0, background.shape[1] - width * scale)
    top = rng.uniform(0, background.shape[0] - height * scale)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    still = _bilinear(background, top + ys * scale, left + xs * scale)
    source = all_photos[rng.integers(len(all_photos))]
    radius_y = height * rng.uniform(0.15, 0.3)
    radius_x = radius_y * rng.uniform(0.7, 1.4)
    patch_scale = min(source.shape[0] / (2 * radius_y), source.shape[1] / (2 * radius_x)) \
        * rng.uniform(0.3, 0.9)
    patch_top = rng.uniform(0, source.shape[0] - 2 * radius_y * patch_scale)
    patch_left = rng.uniform(0, source.shape[1] - 2 * radius_x * patch_scale)
    dx, dy, _ = _CAMERA[motion]
    distance = rng.uniform(*travel)
    shift_x, shift_y = dx * distance * width, dy * distance * height
    start_x = width / 2 + rng.uniform(-0.15, 0.15) * width - shift_x / 2
    start_y = height / 2 + rng.uniform(-0.15, 0.15) * height - shift_y / 2
    count = max(2, round(rng.uniform(*seconds) * fps))
    frames = np.empty((count, height, width, 3), np.uint8)
    gains = _gains(count, rng)
    noise = rng.uniform(1.0, 5.0)
    for i in range(count):
        centre_x = start_x + shift_x * i / (count - 1)
        centre_y = start_y + shift_y * i / (count - 1)
        u, v = (xs - centre_x) / radius_x, (ys - centre_y) / radius_y
        alpha = np.clip((1.0 - np.sqrt(u * u + v * v)) * 8.0, 0.0, 1.0)[..., None]  # soft edge
        patch = _bilinear(source, patch_top + (v + 1) * radius_y * patch_scale,
                          patch_left + (u + 1) * radius_x * patch_scale)
        frames[i] = _finish(still * (1 - alpha) + patch * alpha, gains[i], noise, False, rng)
    return frames, fps


def _gains(count: int, rng: np.random.Generator) -> np.ndarray:
    """A mild exposure drift over the clip: +-8% at most, slowly varying."""
    amplitude, phase, cycles = rng.uniform(0, 0.08), rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 1.0)
    return 1.0 + amplitude * np.sin(phase + 2 * np.pi * cycles * np.arange(count) / count)


def _finish(image: np.ndarray, gain: float, noise: float, gray: bool,
            rng: np.random.Generator) -> np.ndarray:
    if gray:
        image = np.repeat((image @ np.float32([0.299, 0.587, 0.114]))[..., None], 3, axis=2)
    image = image * gain + rng.normal(0.0, noise, image.shape[:2] + ((1,) if gray else (3,)))
    return np.clip(image, 0, 255).astype(np.uint8)


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """`image` sampled at fractional (ys, xs), clamped at its edges."""
    height, width = image.shape[:2]
    ys = np.clip(ys, 0, height - 1.001)
    xs = np.clip(xs, 0, width - 1.001)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = image[y0, x0] * (1 - wx) + image[y0, x0 + 1] * wx
    bottom = image[y0 + 1, x0] * (1 - wx) + image[y0 + 1, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy
