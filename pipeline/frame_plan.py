"""What every decoding backend shares, and nothing that decodes: the types a decode returns
(`VideoInfo`, `Segment`), its one error (`VideoDecodeError`), the decode deadline, and the pure
planning (which frame indices each window samples: round(linspace(0, n-1, T)) over the window's
frames).

A leaf: it imports nothing of ours, so the backends (decode_pyav.py, decode_ffmpeg.py) and the
facade above them (frames.py) can all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The decode deadline: DEFAULT_TIMEOUT_S per started minute of video (a 60-minute video gets two
# hours), measured from the start; a corrupt stream that stalls still fails instead of hanging.
# "Minutes of video" are counted from the stream's frames (count / fps), never from the duration
# the container's header states: a header can claim days to buy a slow decode unlimited time.
# `vidpipe classify/scan --decode-timeout` sets it.
DEFAULT_TIMEOUT_S = 120.0
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


class DecoderRefused(VideoDecodeError):
    """This decoder (the GPU's, NVDEC) cannot take the stream (codec, profile, pixel format,
    size); another decoder may: the GPU actors fall back to the CPU on it."""


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


def window_of_segment(segment: int, start_s: float, end_s: float) -> float:
    """The window length that cut a video into the segment `segment` spanning start_s..end_s
    (as prediction rows record it): segment k > 0 starts at k * window; segment 0 ends at the
    window, or, the only segment, at the video's end, which cuts the video into that one
    segment too. Windowing with it (plan_windows) gives back the same segment."""
    window = start_s / segment if segment > 0 else end_s - start_s
    if segment < 0 or not window > 0:
        raise ValueError(f"segment {segment} from {start_s} s to {end_s} s is no window")
    return window


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


def reject_non_video(container: str) -> None:
    """VideoDecodeError for demuxers that 'decode' things that are not videos."""
    kind = NOT_VIDEO_DEMUXERS.get(container.split(",")[0])
    if kind:
        raise VideoDecodeError(f"not a video: {kind} (ffmpeg format '{container}')")
