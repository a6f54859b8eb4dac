"""Video bytes/URI -> uint8 clips.

Owns everything between a video and the model's input: finding the ffmpeg binary, decoding a video
into frames at the model's size (one ffmpeg process, streamed through a pipe), uniform frame
sampling, cutting long videos into consecutive windows (segments), and probing. Every failure is a
`VideoDecodeError` with a one-line reason; nothing here knows about Ray, storage listings or models.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the command lines; we run them ourselves for timeouts
import numpy as np

from .infrastructure import MACHINE_ERRNOS, InfrastructureError, node_name, temp_dir

DEFAULT_NUM_FRAMES = 20
DEFAULT_SIZE = (64, 64)  # (height, width)
DEFAULT_TIMEOUT_S = 120.0
# A decode that logged errors and produced less than this share of the frames the container
# announces is a truncated video, not a slightly damaged one.
MIN_DECODED_SHARE = 0.9

# Demuxers that ffmpeg happily "decodes" but that are not videos: still images, and text files
# (the tty demuxer renders any text as ANSI art).
_NOT_VIDEO_DEMUXERS = {
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


@functools.cache
def ffmpeg_exe() -> str:
    """The ffmpeg on PATH if there is one, else the binary shipped in the imageio-ffmpeg wheel
    (or IMAGEIO_FFMPEG_EXE). InfrastructureError when there is none: no video decodes here."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise InfrastructureError(f"node {node_name()}: no ffmpeg ({exc})") from None


def _run_ffmpeg(start, cmd: list[str]):
    """start(cmd) (Popen or run), with a missing or unusable binary reported as the node's
    failure rather than the video's."""
    try:
        return start(cmd)
    except (FileNotFoundError, PermissionError) as exc:
        raise InfrastructureError(f"node {node_name()}: cannot run ffmpeg {cmd[0]} "
                                  f"({exc.strerror})") from None


def sample_indices(num_decoded: int, num_frames: int) -> np.ndarray:
    """Indices round(linspace(0, n-1, num_frames)): uniform, first and last frame included.

    With fewer decoded frames than `num_frames` the same frame is repeated, so a short video
    still yields a full clip.
    """
    if num_decoded < 1:
        raise ValueError("need at least one decoded frame")
    return np.round(np.linspace(0, num_decoded - 1, num_frames)).astype(np.int64)


def sample_clip(
    source: str | os.PathLike | bytes,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """`num_frames` frames spread uniformly over the whole video, uint8 [num_frames, H, W, 3].

    `size` is (height, width); frames are resized to it (aspect ratio is not kept, as in the paper).
    All decoded frames are held at the target size (12 KiB each at 64x64) until sampling; long
    videos should go through `sample_segments` with a window instead.
    """
    _, segments = sample_segments(source, num_frames=num_frames, size=size, timeout_s=timeout_s)
    return segments[0].clip


def sample_segments(
    source: str | os.PathLike | bytes,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    window_seconds: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[VideoInfo, list[Segment]]:
    """Decode once and sample a clip from each consecutive window of `window_seconds`.

    Without a window, or for a video no longer than it, there is one segment covering the whole
    video. Frame i is at time i / fps; the last window holds the remainder and may be shorter.
    Memory holds one window's frames at a time.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if window_seconds is not None and window_seconds <= 0:
        raise ValueError("window_seconds must be > 0")
    with _local_path(source) as path, _FrameStream(path, size, timeout_s) as stream:
        segments: list[Segment] = []
        window: list[np.ndarray] = []
        frames_per_window = None  # known once the first frame (and so the header) has arrived
        count = 0
        for frame in stream:
            if window_seconds is not None and frames_per_window is None:
                frames_per_window = window_seconds * stream.header_fps()
            # Frame i belongs to window floor(t_i / window_seconds), t_i = i / fps.
            if frames_per_window and count and int(count / frames_per_window + 1e-9) > len(segments):
                segments.append(_make_segment(len(segments), window, num_frames, window_seconds))
                window = []
            window.append(frame)
            count += 1
        info = stream.finish(count)
        if window:
            segments.append(_make_segment(len(segments), window, num_frames, window_seconds))
    # The last window ends where the video does.
    last = segments[-1]
    segments[-1] = Segment(last.index, last.start_s, info.duration_s, last.clip)
    return info, segments


def decode_frames(
    source: str | os.PathLike | bytes,
    size: tuple[int, int] = DEFAULT_SIZE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[VideoInfo, np.ndarray]:
    """Every frame of the video at `size`, uint8 [N, H, W, 3]. For tests and tools, not for scale."""
    with _local_path(source) as path, _FrameStream(path, size, timeout_s) as stream:
        frames = list(stream)
        info = stream.finish(len(frames))
    return info, np.stack(frames)


def probe(source: str | os.PathLike | bytes, timeout_s: float = DEFAULT_TIMEOUT_S) -> VideoInfo:
    """Codec, size, fps, duration and frame count without decoding pictures (stream copy)."""
    with _local_path(source) as path:
        cmd = (
            ffmpeg.input(_ffmpeg_path_arg(path))
            .output("-", format="null", map="0:v:0", c="copy", progress="pipe:1")
            .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info")
            .compile(cmd=ffmpeg_exe())
        )
        try:
            done = _run_ffmpeg(lambda c: subprocess.run(c, capture_output=True, timeout=timeout_s),
                               cmd)
        except subprocess.TimeoutExpired:  # run() kills and reaps the process
            raise VideoDecodeError(f"probe timed out after {timeout_s:g}s") from None
        stderr = done.stderr.decode("utf-8", "replace").splitlines()
        header = _parse_header(stderr)
        if done.returncode != 0 or header is None:
            raise VideoDecodeError(_failure_reason(stderr, header))
        _reject_non_video(header)
        frames = re.findall(rb"^frame=(\d+)$", done.stdout, flags=re.MULTILINE)
        count = int(frames[-1]) if frames else 0
        if count == 0:
            raise VideoDecodeError("no video frames in the stream")
        return header.to_info(count)


# --- inputs ---------------------------------------------------------------------------------


class _local_path:
    """Context manager: a local file path for any source; bytes and remote URIs go to a temp file.

    A temp file rather than a pipe because MP4s often keep their index (moov) at the end, which
    ffmpeg can only reach by seeking.
    """

    def __init__(self, source: str | os.PathLike | bytes):
        self._source = source
        self._tmp: str | None = None

    def __enter__(self) -> str:
        source = self._source
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self._to_temp(bytes(source), ".video")
        text = os.fspath(source)
        if "://" in text and not text.startswith("file://"):
            return self._to_temp(_read_remote(text), Path(text).suffix)
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

    def _to_temp(self, data: bytes, suffix: str) -> str:
        if not data:
            raise VideoDecodeError("empty input (0 bytes)")
        tmp_dir = temp_dir()
        try:
            fd, self._tmp = tempfile.mkstemp(prefix="vidpipe-", suffix=suffix, dir=tmp_dir)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            self.__exit__()  # a half-written temp file must not stay behind
            if exc.errno in MACHINE_ERRNOS:  # full /dev/shm: every video would fail the same way
                raise InfrastructureError(f"node {node_name()}: cannot stage videos in "
                                          f"{tmp_dir or tempfile.gettempdir()} ({exc.strerror})") from None
            raise
        return self._tmp

    def __exit__(self, *exc) -> None:
        if self._tmp:
            tmp, self._tmp = self._tmp, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _read_remote(uri: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as handle:
            return handle.read()
    except Exception as exc:  # fsspec backends raise many types; all mean "cannot read"
        raise VideoDecodeError(f"cannot read input: {type(exc).__name__}: {exc}") from None


def _ffmpeg_path_arg(path: str) -> str:
    # "file:" stops ffmpeg from reading "a:b.mp4" as protocol "a" or "-x.mp4" as an option.
    return "file:" + os.path.abspath(path)


# --- the decoding process -------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float

    def to_info(self, num_frames: int) -> VideoInfo:
        fps = self.fps
        duration = num_frames / fps if fps > 0 else self.duration_s
        return VideoInfo(self.codec, self.width, self.height, fps, duration, num_frames)

    def expected_frames(self) -> int:
        return int(self.duration_s * self.fps) if self.fps > 0 else 0


_INPUT_RE = re.compile(r"Input #0, (?P<container>[^ ]+), from")
_DURATION_RE = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d+):(?P<s>[\d.]+)")
_VIDEO_RE = re.compile(r"Stream #0:\d+.*?: Video: (?P<codec>\w+)")
_SIZE_RE = re.compile(r"[ ,](?P<w>\d{1,5})x(?P<h>\d{1,5})[ ,]")
_FPS_RE = re.compile(r"(?P<fps>[\d.]+k?) (?:fps|tbr)")
# The filter graph's input at verbose level: the stream's exact rational rate ("fr:24000/1001"),
# where the header shows two decimals ("23.98 fps").
_GRAPH_RATE_RE = re.compile(r"input from stream 0:\d+ .* fr:(?P<rate>\d+/\d+)")


def frame_rate(text: str) -> float:
    """A frame rate written as a rational ("24000/1001", as ffprobe's r_frame_rate, PyAV's
    Fraction or ffmpeg's filter graph give it) or a decimal, as a float; 0.0 when unknown
    ("0/0"). Any decoding backend can use it: the exact rate keeps windows from drifting."""
    numerator, _, denominator = text.strip().partition("/")
    if not denominator:
        return float(numerator)
    return float(numerator) / float(denominator) if float(denominator) else 0.0


def _parse_header(lines: list[str]) -> _Header | None:
    """The first input's container and first video stream, from ffmpeg's info log."""
    container, duration, video_line, exact_fps = "", 0.0, None, 0.0
    for line in lines:
        if "Output #0" in line:
            break
        if match := _GRAPH_RATE_RE.search(line):
            exact_fps = exact_fps or frame_rate(match["rate"])
        elif match := _INPUT_RE.search(line):
            container = match["container"].rstrip(",")
        elif match := _DURATION_RE.search(line):
            duration = int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
        elif video_line is None and _VIDEO_RE.search(line):
            video_line = line
    if video_line is None:
        return None
    codec = _VIDEO_RE.search(video_line)["codec"]
    size = _SIZE_RE.search(video_line.split(": Video: ", 1)[1])
    fps_match = _FPS_RE.search(video_line)
    fps = 0.0
    if fps_match:
        text = fps_match["fps"]
        fps = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    width, height = (int(size["w"]), int(size["h"])) if size else (0, 0)
    return _Header(container, codec, width, height, exact_fps or fps, duration)


def _reject_non_video(header: _Header | None) -> None:
    if header is None:
        return
    kind = _NOT_VIDEO_DEMUXERS.get(header.container.split(",")[0])
    if kind:
        raise VideoDecodeError(f"not a video: {kind} (ffmpeg format '{header.container}')")


def _failure_reason(lines: list[str], header: _Header | None) -> str:
    """One line saying why ffmpeg could not give us frames."""
    text = "\n".join(lines)
    if "Stream map" in text and "matches no streams" in text:
        return "no video stream (audio only or data only)"
    if header is None and "Input #0" in text:
        return "no video stream (audio only or data only)"
    errors = [_strip_level(line) for line in lines if "[error]" in line or "[fatal]" in line]
    if errors:
        return "ffmpeg: " + errors[0]
    return "ffmpeg could not decode the input"


def _strip_level(line: str) -> str:
    line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\] ", "", line)
    return re.sub(r"^\[(error|fatal|warning|info)\] ", "", line).strip()


class _FrameStream:
    """One ffmpeg process decoding a video to raw RGB frames at `size`, read frame by frame.

    stderr is drained by a thread (so ffmpeg never blocks on a full pipe); a timer kills the
    process at the deadline; the process is always reaped on exit.
    """

    def __init__(self, path: str, size: tuple[int, int], timeout_s: float, threads: int = 1):
        height, width = size
        self._shape = (height, width, 3)
        self._frame_bytes = height * width * 3
        self._timeout_s = timeout_s
        # One decoding thread: parallelism comes from running many videos at once.
        self._cmd = (
            ffmpeg.input(_ffmpeg_path_arg(path), threads=threads)
            .output(
                "pipe:1",
                map="0:v:0",
                vf=f"scale={width}:{height}:flags=area",
                pix_fmt="rgb24",
                format="rawvideo",
                fps_mode="passthrough",
                filter_threads=1,
            )
            # verbose: the filter graph's line carries the exact frame rate (frame_rate()).
            .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+verbose")
            .compile(cmd=ffmpeg_exe())
        )
        self._stderr: list[str] = []
        self._header_seen = threading.Event()
        self._timed_out = False

    def __enter__(self) -> _FrameStream:
        self._proc = _run_ffmpeg(lambda c: subprocess.Popen(
            c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ), self._cmd)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self._timer = threading.Timer(self._timeout_s, self._kill_on_timeout)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.stdout.close()
        self._proc.wait()
        self._drain.join(timeout=5)

    def __iter__(self) -> Iterator[np.ndarray]:
        read = self._proc.stdout.read
        while True:
            chunk = read(self._frame_bytes)
            if len(chunk) < self._frame_bytes:
                return  # end of stream (a partial frame means ffmpeg died mid-frame)
            yield np.frombuffer(chunk, dtype=np.uint8).reshape(self._shape)

    def header_fps(self) -> float:
        """The stream's frame rate; valid once a frame has been read (ffmpeg logs it before)."""
        self._header_seen.wait(timeout=10)
        header = _parse_header(self._stderr)
        return header.fps if header and header.fps > 0 else 25.0

    def finish(self, num_frames: int) -> VideoInfo:
        """Wait for ffmpeg to exit and turn its verdict into VideoInfo or VideoDecodeError."""
        self._proc.wait()
        self._timer.cancel()
        self._drain.join(timeout=5)
        if self._timed_out:
            raise VideoDecodeError(f"decode timed out after {self._timeout_s:g}s")
        header = _parse_header(self._stderr)
        _reject_non_video(header)
        if header is None or num_frames == 0:
            if self._proc.returncode == 0 and header is not None:
                raise VideoDecodeError("no video frames could be decoded")
            raise VideoDecodeError(_failure_reason(self._stderr, header))
        logged_errors = any("[error]" in line or "[fatal]" in line for line in self._stderr)
        expected = header.expected_frames()
        if self._proc.returncode != 0 or (
            logged_errors and expected and num_frames < MIN_DECODED_SHARE * expected
        ):
            reason = _failure_reason(self._stderr, header)
            raise VideoDecodeError(
                f"truncated or corrupt: decoded {num_frames} of {expected or '?'} frames; {reason}"
            )
        return header.to_info(num_frames)

    def _drain_stderr(self) -> None:
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if len(self._stderr) < 400:  # the header and first errors; the rest is repetition
                self._stderr.append(line)
            if "Output #0" in line:
                self._header_seen.set()
        self._header_seen.set()

    def _kill_on_timeout(self) -> None:
        if self._proc.poll() is None:
            self._timed_out = True
            self._proc.kill()


def _make_segment(index: int, frames: list[np.ndarray], num_frames: int,
                  window_seconds: float | None) -> Segment:
    clip = np.stack([frames[i] for i in sample_indices(len(frames), num_frames)])
    if window_seconds is None:
        return Segment(index, 0.0, 0.0, clip)  # the caller sets end_s to the duration
    return Segment(index, float(index * window_seconds), float((index + 1) * window_seconds), clip)
