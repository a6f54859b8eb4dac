"""NVDEC checks shared by tests/gpu/test_nvdec_cuda.py (decode_nvdec.NvdecDecoder on CUDA) and
tests/test_nvdec.py (the same code on the CPU, with a software stand-in for NVDEC), so they are
known to run before a GPU sees them. Imports torch, numpy, PyAV and the package's decoding modules
only: they run on a stock PyTorch CUDA image plus the PyAV wheel (`make gpu-wheels`).

Videos are written here with PyAV's bundled encoders (no ffmpeg CLI on that image). Index-coded
frames carry their frame index as 16 black/white stripes (bits), which survive H.264's lossy
4:2:0 coding and the scaling to the clip size, so a clip tells exactly which frames it holds.
"""

from __future__ import annotations

import itertools
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from pipeline import frames
from pipeline.frame_plan import plan_windows
from pipeline.segments import FallbackWindows, VideoWindows

# The GPU path's clips against the CPU path's (PyAV + swscale), uint8 levels: the decoded YUV is
# the same (H.264 decoding is bit-exact), the conversion and area scaling are float arithmetic on
# the device; measured on the CPU with the stand-in: max 4 on test patterns, max 6 and mean 2.5
# on 96x96 synthetic clips (enlarged chroma).
MAX_LEVELS = 8
MEAN_LEVELS = 3.0
BITS = 16  # stripes per frame: two rows of eight


def index_coded_frames(count: int, height: int = 96, width: int = 128) -> np.ndarray:
    """uint8 [count, H, W, 3]: frame i shows the bits of i as white (1) or black (0) stripes."""
    bits = (np.arange(count)[:, None] >> np.arange(BITS)) & 1  # [count, 16]
    grid = bits.reshape(count, 2, BITS // 2).astype(np.uint8) * 255
    image = np.repeat(np.repeat(grid, height // 2, axis=1), width // (BITS // 2), axis=2)
    return np.repeat(image[..., None], 3, axis=3)


def read_index(clip: np.ndarray) -> list[int]:
    """The frame index each frame of a clip [T, H, W, 3] carries (see index_coded_frames)."""
    count, height, width, _ = clip.shape
    cells = clip.mean(axis=3).reshape(count, 2, height // 2, BITS // 2, width // (BITS // 2))
    # the middle of each stripe: its edges are blurred by chroma subsampling and scaling
    centres = cells[:, :, height // 8: -height // 8 or None, :, width // 32: -width // 32 or None]
    bits = centres.mean(axis=(2, 4)).reshape(count, BITS) > 128
    return (bits * (1 << np.arange(BITS))).sum(axis=1).tolist()


def write_video(path: Path, images, codec: str = "libx264", pix_fmt: str = "yuv420p",
                fps: int = 25, options: dict | None = None) -> Path:
    """Encode uint8 frames [H, W, 3] (an array [N, H, W, 3] or any iterable of frames) with
    PyAV into `path` (container from its suffix)."""
    images = iter(images)
    first = next(images)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options=options or {})
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt
        for image in itertools.chain([first], images):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def _on_host(clip) -> np.ndarray:
    return clip.cpu().numpy() if torch.is_tensor(clip) else clip


def frames_match_cpu(decoder, tmp: Path) -> dict:
    """`decoder`'s clips equal the CPU path's (PyAV) within MAX_LEVELS/MEAN_LEVELS, hold exactly
    the CPU path's frame indices, round(linspace(0, n-1, T)) per window, and come with the same
    VideoInfo. Two walks of an index-coded H.264 (B-frames, a keyframe every 25 frames): 4 s
    windows, and 8 frames over all 600, 85 frames apart: each one past the next keyframe, so the
    decoder seeks to it (decode_pyav's rule) and decodes forward to the exact frame."""
    video = write_video(tmp / "index.mp4", index_coded_frames(600),
                        options={"g": "25", "bf": "3", "preset": "veryfast"})
    worst = {"max_levels": 0, "mean_levels": 0.0, "clips": 0}
    for num_frames, window_seconds in ((16, 4.0), (8, None)):
        cpu_info, cpu = frames.sample_segments(video, num_frames, (64, 64), window_seconds)
        info, segments = frames.sample_segments(video, num_frames, (64, 64), window_seconds,
                                                decoder=decoder)
        assert info == cpu_info, (info, cpu_info)
        plans = plan_windows(info.num_frames, info.fps, num_frames, window_seconds)
        assert len(segments) == len(cpu) == len(plans)
        for segment, expected, plan in zip(segments, cpu, plans):
            clip = _on_host(segment.clip)
            assert clip.dtype == np.uint8 and clip.shape == expected.clip.shape
            assert read_index(clip) == read_index(expected.clip) == plan.indices.tolist()
            assert (segment.index, segment.start_s, segment.end_s) == \
                   (expected.index, expected.start_s, expected.end_s)
            difference = np.abs(clip.astype(int) - expected.clip.astype(int))
            worst["max_levels"] = max(worst["max_levels"], int(difference.max()))
            worst["mean_levels"] = max(worst["mean_levels"], float(difference.mean()))
            worst["clips"] += 1
    assert worst["max_levels"] <= MAX_LEVELS and worst["mean_levels"] <= MEAN_LEVELS, worst
    return worst


def _listed(path: Path) -> dict:
    return {"video_uri": str(path), "video_etag": "", "video_bytes": path.stat().st_size}


def fallback_on_unsupported_stream(decoder, tmp: Path) -> None:
    """An FFV1 video (no hardware decoder has FFV1) is decoded on the CPU in the same walk
    (FallbackWindows): records say decoded_on='cpu', clips are the CPU path's exactly; an H.264
    video beside it stays on the GPU decoder."""
    images = index_coded_frames(50, 64, 64)
    ffv1 = write_video(tmp / "lossless.mkv", images, codec="ffv1", pix_fmt="bgr0")
    h264 = write_video(tmp / "plain.mp4", images)
    for path, fell_back, place in ((ffv1, True, "cpu"), (h264, False, decoder.decoded_on)):
        walk = FallbackWindows(_listed(path), 8, 32, 1.0, gpu_decoder=decoder)
        clips = {window["segment"]: _on_host(clip) for window, clip in walk}
        assert walk.fell_back is fell_back, (path.name, walk.refusal)
        assert [r["decoded_on"] for r in walk.records] == [place] * len(walk.records)
        assert [r["error"] for r in walk.records] == [None] * len(walk.records)
        cpu = VideoWindows(_listed(path), 8, 32, 1.0)
        expected = dict((window["segment"], clip) for window, clip in cpu)
        assert [r["segment"] for r in walk.records] == [r["segment"] for r in cpu.records]
        for segment, clip in expected.items():
            if fell_back:
                np.testing.assert_array_equal(clips[segment], clip)
            assert read_index(clips[segment]) == read_index(clip)


def throughput(decoder, device: torch.device, tmp: Path, videos: int = 8, seconds: float = 4.0,
               size: tuple[int, int] = (1080, 1920)) -> dict:
    """Clips per second of GPU decode + classify (`decoder`, clips stay on `device`) against
    CPU decode (PyAV, one thread, as a decode task runs) + classify on `device`, over `videos`
    H.264 videos of `seconds` at `size` (one per 2 s window: the pipeline's default sampling)."""
    from pipeline.models import for_inference, predict_probs
    from pipeline.models.checkpoint import ModelConfig

    config = ModelConfig("cnn3dbn_gru32", ("Left", "Right", "Up"), frames=20, size=64)
    torch.manual_seed(0)
    model = for_inference(config.build(), device)
    rng = np.random.default_rng(0)
    paths = []
    height, width = size
    base = (np.add.outer(np.arange(height) // 4, np.arange(width) // 4) % 224).astype(np.uint8)
    for index in range(videos):  # a moving gradient with noise: a realistic bit rate
        images = ((base + 3 * t)[..., None] + rng.integers(0, 32, (height, width, 3), np.uint8)
                  for t in range(int(seconds * 25)))
        paths.append(write_video(tmp / f"hd{index}.mp4", images, options={"preset": "veryfast"}))

    def run(decode) -> tuple[float, int]:
        started, clips = time.perf_counter(), 0
        for path in paths:
            segments = [segment.clip for segment in
                        frames.sample_segments(path, 20, (64, 64), 2.0, decoder=decode)[1]]
            batch = torch.stack([torch.as_tensor(clip).to(device) for clip in segments])
            predict_probs(model, batch, batch_size=len(batch))
            clips += len(segments)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, clips

    run(decoder), run("pyav")  # warm-up: CUDA contexts, cuDNN plans, the model's first calls
    gpu_s, clips = run(decoder)
    cpu_s, _ = run("pyav")
    return {"videos": videos, "clips": clips, "frames_per_video": int(seconds * 25),
            "resolution": f"{size[1]}x{size[0]}", "gpu_decode_clips_per_s": round(clips / gpu_s, 2),
            "cpu_decode_clips_per_s": round(clips / cpu_s, 2), "ratio": round(cpu_s / gpu_s, 2)}
