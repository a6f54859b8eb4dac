"""Test videos made on the spot with the real ffmpeg: index-coded clips and every kind of bad input."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_binary import ffmpeg_exe
from pipeline.synthetic import encode_h264


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def index_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Uniform frames whose colour encodes their index: R = i % 256, G = i // 256."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[..., 0] = (np.arange(count) % 256)[:, None, None]
    frames[..., 1] = (np.arange(count) // 256)[:, None, None]
    return frames


def decode_index(clip: np.ndarray) -> np.ndarray:
    """The frame index each sampled frame carries (see `index_frames`)."""
    means = clip.reshape(len(clip), -1, 3).mean(axis=1)
    return np.round(means[:, 0]).astype(int) + 256 * np.round(means[:, 1]).astype(int)


def write_lossless_index_video(path: Path, count: int, fps: int = 25) -> Path:
    """An FFV1/MKV video (lossless) of `index_frames(count)`."""
    frames = index_frames(count)
    _, height, width, _ = frames.shape
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
           "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    return path


def write_h264(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    path.write_bytes(encode_h264(frames, fps))
    return path


def write_testsrc(path: Path, seconds: float, size: str = "128x96", fps: int = 25,
                  faststart: bool = False, keyint: int | None = None) -> Path:
    """An H.264 MP4 of ffmpeg's test pattern; `faststart` puts the index at the front; `keyint`:
    a keyframe every so many frames (default: x264's 250)."""
    extra = ["-movflags", "+faststart"] if faststart else []
    if keyint:
        extra += ["-g", str(keyint), "-keyint_min", str(keyint), "-sc_threshold", "0"]
    run_ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}:duration={seconds}",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def write_bad_inputs(folder: Path) -> dict[str, Path]:
    """One file of each bad kind, named by kind, all with a video extension."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder.parent / f"{folder.name}-source.mp4"  # outside the folder: only bad files in it
    data = write_testsrc(source, 2).read_bytes()
    source.unlink()
    bad = {
        "empty": folder / "empty.mp4",
        "random_bytes": folder / "random_bytes.mp4",
        "text": folder / "text.mp4",
        "truncated": folder / "truncated.mp4",
        "audio_only": folder / "audio_only.mp4",
    }
    bad["empty"].write_bytes(b"")
    bad["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    bad["text"].write_text("this is not a video\n" * 200)
    bad["truncated"].write_bytes(data[: len(data) // 2])  # the moov index at the end is lost
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", "-f", "mp4",
               str(bad["audio_only"]))
    return bad


def write_sparse_key_index_video(path: Path, count: int, fps: int = 25, keyint: int = 250,
                                 bframes: int = 3, vfr: bool = False) -> Path:
    """A lossless H.264 (libx264rgb, qp 0) MP4 of `index_frames(count)` with a keyframe every
    `keyint` frames and B-frames: seeking must land on keyframes and decode forward exactly.
    `vfr`: frame i shown at a time that is not i / fps (its timestamps cannot index frames)."""
    frames = index_frames(count)
    _, height, width, _ = frames.shape
    timing = ["-vf", "setpts=N/TB/25+gt(N\,20)*N/TB/100", "-fps_mode", "vfr"] if vfr else []
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
           *timing, "-c:v", "libx264rgb", "-qp", "0", "-g", str(keyint),
           "-keyint_min", str(keyint), "-sc_threshold", "0", "-bf", str(bframes), str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    return path


# --- containers that lie about their duration -------------------------------------------------

_MP4_CONTAINER_BOXES = {b"moov", b"trak", b"mdia"}


def scale_mp4_durations(data: bytes, factor: float) -> bytes:
    """The MP4 with the duration fields of its movie (mvhd), track (tkhd) and media (mdhd)
    headers multiplied by `factor` (capped to the field): the header claims a longer or shorter
    video than its samples hold; the sample tables, which demuxing follows, are untouched. So is
    the edit list (elst): it is no claim but an instruction, which FFmpeg follows as players do
    (an edit that shows 0.04 s of the media makes a 0.04 s video)."""
    out = bytearray(data)

    def walk(start: int, end: int) -> None:
        pos = start
        while pos + 8 <= end:
            size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
            body = pos + 8
            if size == 1:
                size, body = int.from_bytes(data[pos + 8:pos + 16], "big"), pos + 16
            elif size == 0:
                size = end - pos
            if kind in _MP4_CONTAINER_BOXES:
                walk(body, pos + size)
            elif kind in (b"mvhd", b"tkhd", b"mdhd"):
                wide = data[body] == 1  # version 1: 64-bit times and duration
                width = 8 if wide else 4
                # version/flags, creation and modification times, then timescale or track id
                # (tkhd also has 4 reserved bytes before its duration)
                offset = body + 4 + 2 * width + 4 + (4 if kind == b"tkhd" else 0)
                value = int.from_bytes(data[offset:offset + width], "big")
                scaled = min(max(1, int(value * factor)), 2 ** (8 * width) - 1)
                out[offset:offset + width] = scaled.to_bytes(width, "big")
            pos += size

    walk(0, len(data))
    return bytes(out)


def scale_mkv_duration(data: bytes, factor: float) -> bytes:
    """The Matroska file with its Segment Info Duration element (ID 0x4489, a float) multiplied
    by `factor`; the blocks' timestamps are untouched."""
    for size, fmt in ((8, ">d"), (4, ">f")):
        at = data.find(b"\x44\x89" + bytes([0x80 | size]))
        if at >= 0:
            start = at + 3
            (value,) = struct.unpack(fmt, data[start:start + size])
            return data[:start] + struct.pack(fmt, value * factor) + data[start + size:]
    raise ValueError("no Duration element")
