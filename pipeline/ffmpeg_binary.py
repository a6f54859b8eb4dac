"""Where the ffmpeg binary is: the one on PATH, else the one shipped in the imageio-ffmpeg wheel.

A leaf: it imports nothing of ours. It says only that there is no ffmpeg; whether that fails
a video, a node or a tool is its caller's business (decode_ffmpeg.py makes it the node's
failure, infrastructure.py's node check reports it).
"""

from __future__ import annotations

import functools
import shutil


class FfmpegNotFound(FileNotFoundError):
    """No ffmpeg on PATH and none in the imageio-ffmpeg wheel (or at IMAGEIO_FFMPEG_EXE)."""


@functools.cache
def ffmpeg_exe() -> str:
    """The ffmpeg on PATH if there is one, else the binary shipped in the imageio-ffmpeg wheel
    (or IMAGEIO_FFMPEG_EXE). FfmpegNotFound when there is none."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise FfmpegNotFound(f"no ffmpeg ({exc})") from None
