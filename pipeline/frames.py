"""Video path/bytes/URI/file object -> uint8 clips: the facade over the decoding backends.

Owns the public API (`sample_clip`, `sample_segments`, `iter_segments`, `decode_frames`, `probe`),
opening the input (a local path, or a seekable file object for bytes and remote URIs, so a long S3
video is read by ranges rather than downloaded whole), and the choice of decoding backend:

- "pyav" (default, decode_pyav.py): in process; frame count and time base from the container,
  decodes forward to each selected frame (seeking to the keyframe before a far one) and converts
  and scales only the frames kept;
- "ffmpeg" (decode_ffmpeg.py): one ffmpeg CLI process per video decoding every frame to RGB;
- a decoder object with the backends' `iter_segments` (decode_nvdec.NvdecDecoder: NVDEC on a GPU,
  clips as uint8 tensors on that GPU), which the GPU actors pass instead of a name.

Both give the same `VideoDecodeError` reasons (one line each) and the same clips up to the
scaler's rounding (tests/test_frames.py states the tolerance). What the backends share (the
types, the error, the per-video deadline and the pure planning: which frame indices each window
samples) lives in the leaf frame_plan.py, below both backends; dependencies point one way:
frames -> decode_pyav / decode_ffmpeg -> frame_plan, ffmpeg_binary (and infrastructure). Nothing
here knows about Ray, storage listings or models.
"""

from __future__ import annotations

import io
import os
from collections.abc import Generator

import numpy as np

# The types, the error and the planning live in the leaf frame_plan.py, which the backends import
# too; they are re-exported here because callers know them as part of this API.
from .frame_plan import (DEFAULT_TIMEOUT_S, MIN_DECODED_SHARE, Segment,  # noqa: F401
                         VideoDecodeError, VideoInfo, WindowPlan, deadline_s, finish_segments,
                         frame_rate, joins_previous_window, plan_windows, sample_indices,
                         window_of_frame)

DEFAULT_NUM_FRAMES = 20
DEFAULT_SIZE = (64, 64)  # (height, width)
DECODERS = ("pyav", "ffmpeg")  # the CPU backends, by name
DEFAULT_DECODER = "pyav"
# What `--decoder` offers classify and scan: "auto" is NVDEC on GPU actors where it works, else
# PyAV; "nvdec" insists on NVDEC (decoder_choice.py resolves them before the work starts).
DECODER_CHOICES = ("auto", *DECODERS, "nvdec")


# --- public API -------------------------------------------------------------------------------

Source = str | os.PathLike | bytes | io.IOBase


def sample_clip(
    source: Source,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    decoder: str = DEFAULT_DECODER,
) -> np.ndarray:
    """`num_frames` frames spread uniformly over the whole video, uint8 [num_frames, H, W, 3].

    `size` is (height, width); frames are resized to it (aspect ratio is not kept, as in the paper).
    """
    _, segments = sample_segments(source, num_frames=num_frames, size=size, timeout_s=timeout_s,
                                  decoder=decoder)
    return segments[0].clip


def sample_segments(
    source: Source,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    window_seconds: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    decoder: str = DEFAULT_DECODER,
) -> tuple[VideoInfo, list[Segment]]:
    """A clip from each consecutive window of `window_seconds` (see `plan_windows`).

    Without a window, or for a video shorter than 1.5 windows, there is one segment covering the
    whole video. Frame i is at time i / fps; the last window holds the remainder: between half a
    window and 1.5 windows (see joins_previous_window).
    """
    windows = iter_segments(source, num_frames, size, window_seconds, timeout_s, decoder)
    segments = []
    while True:
        try:
            segments.append(next(windows))
        except StopIteration as finished:
            info = finished.value
            return info, finish_segments(segments, info.duration_s)


def iter_segments(
    source: Source,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    window_seconds: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    decoder: str = DEFAULT_DECODER,
) -> Generator[Segment, None, VideoInfo]:
    """The segments of `sample_segments` one at a time, each as soon as its window's last sampled
    frame is decoded: memory holds one window's frames and clip, whatever the video's length.

    The generator's return value is the VideoInfo. The last segment's `end_s` is its window's
    nominal end (0.0 without windows): where the video ends is known only once decoding has
    finished (`finish_segments` with info.duration_s). A VideoDecodeError can come after some
    segments were yielded (a video truncated halfway), so a caller that treats a video as whole
    or failed keeps what it derives from them until the generator returns. The decode deadline
    counts from the first segment requested, the caller's time between segments included.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if window_seconds is not None and window_seconds <= 0:
        raise ValueError("window_seconds must be > 0")
    with open_input(source) as opened:
        return (yield from backend(decoder).iter_segments(opened, num_frames, size,
                                                          window_seconds, timeout_s))


def decode_frames(
    source: Source,
    size: tuple[int, int] = DEFAULT_SIZE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    decoder: str = DEFAULT_DECODER,
) -> tuple[VideoInfo, np.ndarray]:
    """Every frame of the video at `size`, uint8 [N, H, W, 3]. For tests and tools, not for scale."""
    with open_input(source) as opened:
        return backend(decoder).decode_frames(opened, size, timeout_s)


def probe(source: Source, timeout_s: float = DEFAULT_TIMEOUT_S,
          decoder: str = DEFAULT_DECODER) -> VideoInfo:
    """Codec, size, fps, duration and frame count without decoding pictures."""
    with open_input(source) as opened:
        return backend(decoder).probe(opened, timeout_s)


def backend(decoder):
    """The module implementing `decoder` ("pyav" or "ffmpeg"), or `decoder` itself when it is a
    decoder object (decode_nvdec.NvdecDecoder)."""
    if hasattr(decoder, "iter_segments"):
        return decoder
    if decoder == "pyav":
        from . import decode_pyav

        return decode_pyav
    if decoder == "ffmpeg":
        from . import decode_ffmpeg

        return decode_ffmpeg
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")


# --- inputs ---------------------------------------------------------------------------------


class open_input:
    """Context manager: a readable local path (str), or a seekable binary file object.

    Bytes become an in-memory file; a remote URI (s3://...) is opened through fsspec with range
    reads; a file object is used as it is (not closed here). Empty or unreadable inputs raise
    VideoDecodeError before any backend sees them.
    """

    def __init__(self, source: Source):
        self._source = source
        self._close: io.IOBase | None = None

    def __enter__(self) -> str | io.IOBase:
        source = self._source
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise VideoDecodeError("empty input (0 bytes)")
            return io.BytesIO(bytes(source))
        if hasattr(source, "read"):
            _check_not_empty(source)
            return source
        text = os.fspath(source)
        if "://" in text and not text.startswith("file://"):
            handle = _open_remote(text)
            try:
                _check_not_empty(handle)
            except BaseException:
                handle.close()
                raise
            self._close = handle
            return handle
        path = text.removeprefix("file://")
        try:
            size = os.path.getsize(path)
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise VideoDecodeError(f"cannot read input: {exc.strerror or exc}") from None
        if size == 0:
            raise VideoDecodeError("empty file (0 bytes)")
        return path

    def __exit__(self, *exc) -> None:
        if self._close is not None:
            self._close.close()


def _open_remote(uri: str):
    from .storage import open_video

    try:
        return open_video(uri)
    except Exception as exc:  # fsspec backends raise many types; all mean "cannot read"
        raise VideoDecodeError(f"cannot read input: {type(exc).__name__}: {exc}") from None


def _check_not_empty(handle) -> None:
    position = handle.tell()
    if handle.seek(0, io.SEEK_END) == 0:
        raise VideoDecodeError("empty input (0 bytes)")
    handle.seek(position)
