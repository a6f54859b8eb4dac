"""The ffmpeg CLI decoding backend (`--decoder ffmpeg`): one ffmpeg process per video, built with
ffmpeg-python, decoding every frame to RGB at the model's size through a pipe; frames.py samples them.

It owns the CLI's specifics: reading ffmpeg's info log (header regexes) and turning its exit status
and error lines into `VideoDecodeError` reasons. Inputs that are not a local file go to a temp file
first (MP4s often keep their index at the end, which ffmpeg can only reach by seeking).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import ffmpeg  # ffmpeg-python: builds the command lines; we run them ourselves for timeouts
import numpy as np

from .ffmpeg_binary import FfmpegNotFound, ffmpeg_exe
from .frame_plan import (MIN_DECODED_SHARE, Segment, VideoDecodeError, VideoInfo, deadline_s,
                         frame_rate, joins_previous_window, make_segment, reject_non_video,
                         sample_indices, window_of_frame)
from .infrastructure import MACHINE_ERRNOS, InfrastructureError, node_name, temp_dir


def _ffmpeg() -> str:
    """ffmpeg_exe(), with no ffmpeg reported as the node's failure: no video decodes here."""
    try:
        return ffmpeg_exe()
    except FfmpegNotFound as exc:
        raise InfrastructureError(f"node {node_name()}: {exc}") from None


def _run_ffmpeg(start, cmd: list[str]):
    """start(cmd) (Popen or run), with a missing or unusable binary reported as the node's
    failure rather than the video's."""
    try:
        return start(cmd)
    except (FileNotFoundError, PermissionError) as exc:
        raise InfrastructureError(f"node {node_name()}: cannot run ffmpeg {cmd[0]} "
                                  f"({exc.strerror})") from None


# --- the backend's API (frames.py calls these with an opened input) -----------------------------


def iter_segments(source, num_frames: int, size: tuple[int, int], window_seconds: float | None,
                  timeout_s: float) -> Generator[Segment, None, VideoInfo]:
    """Decode every frame once and sample a clip from each window. A finished window waits until
    the next one has half a window of frames, or the stream ends (then a shorter remainder joins
    it, as frame_plan.plan_windows plans): at most 1.5 windows' frames are held."""
    with _local_path(source) as path, _FrameStream(path, size, timeout_s) as stream:
        window: list[np.ndarray] = []
        finished: list[np.ndarray] | None = None  # window `index - 1`, not yet yielded
        index = count = 0
        for frame in stream:
            if count and window_seconds is not None and \
                    window_of_frame(count, stream.header_fps(), window_seconds) > index:
                if finished is not None:
                    yield _sampled(index - 1, finished, num_frames, window_seconds)
                index, finished, window = index + 1, window, []
            window.append(frame)
            count += 1
            if finished is not None and \
                    not joins_previous_window(len(window), stream.header_fps(), window_seconds):
                yield _sampled(index - 1, finished, num_frames, window_seconds)
                finished = None
        info = stream.finish(count)
        if finished is not None:  # the remainder is under half a window: one last segment
            yield _sampled(index - 1, finished + window, num_frames, window_seconds)
        elif window:
            yield _sampled(index, window, num_frames, window_seconds)
    return info


def decode_frames(source, size: tuple[int, int], timeout_s: float) -> tuple[VideoInfo, np.ndarray]:
    with _local_path(source) as path, _FrameStream(path, size, timeout_s) as stream:
        frames = list(stream)
        info = stream.finish(len(frames))
    return info, np.stack(frames)


def probe(source, timeout_s: float) -> VideoInfo:
    """Stream copy to the null muxer: the header plus a packet count, no pictures decoded."""
    with _local_path(source) as path:
        cmd = (
            ffmpeg.input(_ffmpeg_path_arg(path))
            .output("-", format="null", map="0:v:0", c="copy", progress="pipe:1")
            .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info")
            .compile(cmd=_ffmpeg())
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


def _sampled(index: int, frames: list[np.ndarray], num_frames: int,
             window_seconds: float | None) -> Segment:
    clip = np.stack([frames[i] for i in sample_indices(len(frames), num_frames)])
    return make_segment(index, clip, window_seconds)


class _local_path:
    """Context manager: a local file path for a path or a file object (copied to a temp file).

    A temp file rather than a pipe because MP4s often keep their index (moov) at the end, which
    ffmpeg can only reach by seeking.
    """

    def __init__(self, source):
        self._source = source
        self._tmp: str | None = None

    def __enter__(self) -> str:
        if isinstance(self._source, str):
            return self._source
        tmp_dir = temp_dir()
        try:
            fd, self._tmp = tempfile.mkstemp(prefix="vidpipe-", suffix=".video", dir=tmp_dir)
            with os.fdopen(fd, "wb") as handle:
                self._source.seek(0)
                shutil.copyfileobj(self._source, handle, 1024 * 1024)
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
    if header is not None:
        reject_non_video(header.container)


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

    stderr is drained by a thread (so ffmpeg never blocks on a full pipe); a watchdog kills the
    process at the deadline (frame_plan.deadline_s over the frames delivered so far: it grows with the
    video actually decoded, whatever duration the header claims); the process is always reaped on
    exit.
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
            .compile(cmd=_ffmpeg())
        )
        self._stderr: list[str] = []
        self._header_seen = threading.Event()
        self._timed_out = False
        self._allowed_s = timeout_s
        self._delivered = 0  # frames read from the pipe so far (the watchdog's measure of progress)
        self._fps = 0.0  # the header's rate once it is read
        self._done = threading.Event()

    def __enter__(self) -> _FrameStream:
        self._proc = _run_ffmpeg(lambda c: subprocess.Popen(
            c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ), self._cmd)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self._started = time.monotonic()
        self._watchdog = threading.Thread(target=self._kill_on_timeout, daemon=True)
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
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
            self._delivered += 1
            yield np.frombuffer(chunk, dtype=np.uint8).reshape(self._shape)

    def header_fps(self) -> float:
        """The stream's frame rate; valid once a frame has been read (ffmpeg logs it before)."""
        self._header_seen.wait(timeout=10)
        header = _parse_header(self._stderr)
        return header.fps if header and header.fps > 0 else 25.0

    def finish(self, num_frames: int) -> VideoInfo:
        """Wait for ffmpeg to exit and turn its verdict into VideoInfo or VideoDecodeError."""
        self._proc.wait()
        self._done.set()
        self._drain.join(timeout=5)
        if self._timed_out:
            raise VideoDecodeError(f"decode timed out after {self._allowed_s:g}s")
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
            if "Output #0" in line and not self._header_seen.is_set():
                header = _parse_header(self._stderr)
                if header is not None:
                    self._fps = header.fps
                self._header_seen.set()
        self._header_seen.set()

    def _kill_on_timeout(self) -> None:
        while not self._done.wait(timeout=min(1.0, self._timeout_s)):
            decoded_s = self._delivered / self._fps if self._fps > 0 else 0.0
            self._allowed_s = deadline_s(self._timeout_s, decoded_s)
            if time.monotonic() - self._started > self._allowed_s and self._proc.poll() is None:
                self._timed_out = True
                self._proc.kill()
                return
