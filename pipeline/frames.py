"""Video path/bytes/URI/file object -> uint8 clips.

Owns everything between a video and the model's input that does not depend on how it is decoded:
the public API (`sample_clip`, `sample_segments`, `iter_segments`, `decode_frames`, `probe`),
the pure planning (which frame indices each window samples: round(linspace(0, n-1, T)) over the
window's frames), opening the input (a local path, or a seekable file object for bytes and remote
URIs, so a long S3 video is read by ranges rather than downloaded whole), the per-video deadline,
and the choice of decoding backend:

- "pyav" (default, decode_pyav.py): in process; frame count and time base from the container,
  decodes forward to each selected frame (seeking to the keyframe before a far one) and converts
  and scales only the frames kept;
- "ffmpeg" (decode_ffmpeg.py): one ffmpeg CLI process per video decoding every frame to RGB.

Both give the same `VideoDecodeError` reasons (one line each) and the same clips up to the
scaler's rounding (tests/test_frames.py states the tolerance). Nothing here knows about Ray,
storage listings or models.
"""

from __future__ import annotations

import io
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass

import numpy as np


DEFAULT_NUM_FRAMES = 20
DEFAULT_SIZE = (64, 64)  # (height, width)
# The decode deadline: DEFAULT_TIMEOUT_S per started minute of video (a 60-minute video gets two
# hours), measured from the start; a corrupt stream that stalls still fails instead of hanging.
# "Minutes of video" are counted from the stream's frames (count / fps), never from the duration
# the container's header states: a header can claim days to buy a slow decode unlimited time.
# `vidpipe classify/scan --decode-timeout` sets it.
DEFAULT_TIMEOUT_S = 120.0
DECODERS = ("pyav", "ffmpeg")
DEFAULT_DECODER = "pyav"
# A decode that logged errors and produced less than this share of the frames the container
# announces is a truncated video, not a slightly damaged one.
MIN_DECODED_SHARE = 0.9

# Demuxers that ffmpeg happily "decodes" but that are not videos: still images, and text files
# (the tty demuxer renders any text as ANSI art).
NOT_VIDEO_DEMUXERS = {
    "tty": "a text file", "bin": "a text file", "xbin": "a text file", "adf": "a text file",
    "idf": "a text file",
    "image2": "a still image", "png_pipe": "a still image", "jpeg_pipe": "a still image",
    "bmp_pipe": "a still image", "webp_pipe": "a still image", "tiff_pipe": "a still image",
}


class VideoDecodeError(Exception):
    """The input cannot be turned into frames; the message is a one-line reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What the decoded stream says about a video (not what its file name or listing says)."""

    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    num_frames: int


@dataclass(frozen=True)
class Segment:
    """One window of a video and its sampled clip, uint8 [T, H, W, 3]."""

    index: int
    start_s: float
    end_s: float
    clip: np.ndarray


@dataclass(frozen=True)
class WindowPlan:
    """One window: its frames [first, stop) and the indices (absolute) its clip samples."""

    index: int
    first: int
    stop: int
    indices: np.ndarray


def ffmpeg_exe() -> str:
    """The ffmpeg binary (PATH, else the imageio-ffmpeg wheel's); the CLI backend and tests use it."""
    from .decode_ffmpeg import ffmpeg_exe as exe

    return exe()


# --- pure planning ------------------------------------------------------------------------------


def frame_rate(text: str) -> float:
    """A frame rate written as a rational ("24000/1001", as ffprobe's r_frame_rate, PyAV's
    Fraction or ffmpeg's filter graph give it) or a decimal, as a float; 0.0 when unknown
    ("0/0"). The exact rate keeps windows from drifting (ffmpeg's header shows two decimals)."""
    numerator, _, denominator = text.strip().partition("/")
    if not denominator:
        return float(numerator)
    return float(numerator) / float(denominator) if float(denominator) else 0.0


def sample_indices(num_decoded: int, num_frames: int) -> np.ndarray:
    """Indices round(linspace(0, n-1, num_frames)): uniform, first and last frame included.

    With fewer decoded frames than `num_frames` the same frame is repeated, so a short video
    still yields a full clip.
    """
    if num_decoded < 1:
        raise ValueError("need at least one decoded frame")
    return np.round(np.linspace(0, num_decoded - 1, num_frames)).astype(np.int64)


def window_of_frame(index: int, fps: float, window_seconds: float | None) -> int:
    """The window frame `index` (at time index / fps) falls in; 0 without windows."""
    if window_seconds is None or fps <= 0:
        return 0
    return int(index / (window_seconds * fps) + 1e-9)


def joins_previous_window(frames_in_last: int, fps: float, window_seconds: float | None) -> bool:
    """Whether a video's last window, of `frames_in_last` frames, is too short to stand alone
    and joins the window before it: under half a window. A model sees the motion of a clip's
    whole span; a tail of a few frames, stretched to a full clip, would look nearly still (a
    3.4 s video at 3 s windows is one segment, not 3 s and 0.4 s)."""
    return window_seconds is not None and frames_in_last < 0.5 * window_seconds * fps


def plan_windows(num_decoded: int, fps: float, num_frames: int,
                 window_seconds: float | None) -> list[WindowPlan]:
    """The windows of a video of `num_decoded` frames and the frames each clip samples.

    Windows are numbered consecutively in order of their first frame (as the streaming CLI
    backend numbers them), each sampling round(linspace) over its own frames; the last window
    takes the remainder, and a remainder under half a window joins it (joins_previous_window).
    """
    if num_decoded < 1:
        raise ValueError("need at least one decoded frame")
    windows = (np.arange(num_decoded) / (window_seconds * fps) + 1e-9).astype(np.int64) \
        if window_seconds is not None and fps > 0 else np.zeros(num_decoded, np.int64)
    starts = np.flatnonzero(np.diff(windows, prepend=-1))
    if len(starts) > 1 and joins_previous_window(num_decoded - starts[-1], fps, window_seconds):
        starts = starts[:-1]
    stops = np.append(starts[1:], num_decoded)
    return [WindowPlan(number, int(first), int(stop), first + sample_indices(stop - first, num_frames))
            for number, (first, stop) in enumerate(zip(starts, stops))]


def make_segment(index: int, clip: np.ndarray, window_seconds: float | None) -> Segment:
    if window_seconds is None:
        return Segment(index, 0.0, 0.0, clip)  # the caller sets end_s to the duration
    return Segment(index, float(index * window_seconds), float((index + 1) * window_seconds), clip)


def finish_segments(segments: list[Segment], duration_s: float) -> list[Segment]:
    """The last window ends where the video does."""
    last = segments[-1]
    segments[-1] = Segment(last.index, last.start_s, duration_s, last.clip)
    return segments


def deadline_s(timeout_s: float, duration_s: float) -> float:
    """Seconds a decode may take: `timeout_s` per started minute of video; `duration_s` must come
    from the stream's frames (see DEFAULT_TIMEOUT_S), not from the container's header."""
    return timeout_s * max(1.0, np.ceil(max(duration_s, 0.0) / 60.0))


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


def backend(decoder: str):
    """The module implementing `decoder` ("pyav" or "ffmpeg")."""
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


def reject_non_video(container: str) -> None:
    """VideoDecodeError for demuxers that 'decode' things that are not videos."""
    kind = NOT_VIDEO_DEMUXERS.get(container.split(",")[0])
    if kind:
        raise VideoDecodeError(f"not a video: {kind} (ffmpeg format '{container}')")


def stack(frames: Iterable[np.ndarray]) -> np.ndarray:
    return np.stack(list(frames))
