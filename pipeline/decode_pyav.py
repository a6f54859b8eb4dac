"""The in-process PyAV decoding backend (default, `--decoder pyav`); PyAV's wheels bundle FFmpeg.

Decodes only what the clips need: the frame count and time base come from the container
(a packet count when the container has none), frame_plan.plan_windows picks the indices, and the
decoder runs forward to each selected frame, converting and scaling (one swscale call, area
filter, as the CLI backend's `scale=W:H:flags=area`) only the frames kept. When the next target is
further away than the keyframe interval seen so far, it seeks to the keyframe before the target
and decodes forward to the exact frame, identified by its timestamp. Seeking is used only while
every decoded frame's timestamp matches its count (constant frame rate); otherwise, and whenever
the container's count proves wrong, the video is decoded again sequentially with an exact count.

The same walk serves the GPU decoder (decode_nvdec.py): `iter_segments` takes PyAV's `hwaccel`
(the codec context then decodes on NVDEC) and `output`, what a kept frame becomes (here a uint8
numpy frame through swscale; there a uint8 tensor on the GPU), so frame indices, seeking and
errors are the CPU's by construction.

It owns the library's specifics: FFmpeg's error log (captured per thread) and exceptions become
the same one-line `VideoDecodeError` reasons the CLI backend gives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from fractions import Fraction

import av
import av.filter
import av.logging
import numpy as np

from .frame_plan import (MIN_DECODED_SHARE, DecoderRefused, Segment, VideoDecodeError, VideoInfo,
                         deadline_s, make_segment, plan_windows, reject_non_video)

# Seek only when the target is at least this many frames past the current one (and past the
# keyframe interval seen so far): a seek flushes the decoder and re-reads from a keyframe.
MIN_SEEK_FRAMES = 8

# FFmpeg logs errors through PyAV's callback; Capture (per thread) collects them for the reasons.
av.logging.set_level(av.logging.ERROR)
av.logging.set_skip_repeated(False)


class _ShortStream(Exception):
    """The stream ended (or failed) before a frame the plan needs."""

    def __init__(self, decoded: int, error: str | None):
        self.decoded, self.error = decoded, error


class _NotConstantRate(Exception):
    """A frame's timestamp disagrees with its count: timestamps cannot address frames."""


def iter_segments(source, num_frames: int, size: tuple[int, int], window_seconds: float | None,
                  timeout_s: float, hwaccel=None, output=None
                  ) -> Generator[Segment, None, VideoInfo]:
    """`hwaccel`: an av.codec.hwaccel.HWAccel to decode with (DecoderRefused when the stream's
    codec has none); `output`: what kept frames become (default: RGBFrames, uint8 numpy)."""
    started = time.monotonic()
    output = output or RGBFrames()
    with _Video(source, timeout_s, started, hwaccel) as video:
        count = video.announced_frames
        if count == 0:
            raise VideoDecodeError(video.error_reason() or "no video frames could be decoded")
        seek, recounted, emitted = True, False, 0
        while True:
            try:
                # A restart skips the windows already yielded: they are unchanged. Every frame is
                # the exact frame with or without seeking, and a recount only moves the end of the
                # video, which lies past every yielded window's last frame (that frame decoded).
                for segment in _sample(video, count, num_frames, size, window_seconds, seek,
                                       output, skip=emitted):
                    yield segment
                    emitted += 1
                break
            except _NotConstantRate:
                seek = False  # timestamps are no frame index here: decode forward only
            except _ShortStream as short:
                if short.error and short.decoded < MIN_DECODED_SHARE * count or recounted:
                    reason = f"; ffmpeg: {short.error}" if short.error else ""
                    raise VideoDecodeError(f"truncated or corrupt: decoded {short.decoded} of "
                                           f"{count} frames{reason}") from None
                # The container announced more frames than decode: count them, sample again.
                count, seek, recounted = video.count_frames(), False, True
        return video.info(count)


def decode_frames(source, size: tuple[int, int], timeout_s: float) -> tuple[VideoInfo, np.ndarray]:
    with _Video(source, timeout_s, time.monotonic()) as video:
        video.rewind()
        frames = [_rgb(frame, size) for frame in video.frames()]
        if not frames:
            raise VideoDecodeError(video.error_reason() or "no video frames could be decoded")
        return video.info(len(frames)), np.stack(frames)


def probe(source, timeout_s: float) -> VideoInfo:
    """The container's facts; the frame count is the container's, else a packet count."""
    with _Video(source, timeout_s, time.monotonic()) as video:
        count = video.announced_frames
        if count == 0:
            raise VideoDecodeError("no video frames in the stream")
        return video.info(count)


def _sample(video: _Video, count: int, num_frames: int, size: tuple[int, int],
            window_seconds: float | None, seek: bool, output, skip: int = 0
            ) -> Iterator[Segment]:
    """The segments of the plan for `count` frames, after the first `skip`, in order."""
    plans = plan_windows(count, float(video.fps), num_frames, window_seconds)[skip:]
    if not plans:
        return
    wanted = np.unique(np.concatenate([plan.indices for plan in plans]))
    video.rewind()
    kept = _kept_frames(video, wanted.tolist(), size, seek, output)
    held = {}
    for plan in plans:  # frames arrive in order; a window's clip is made once its last arrives
        while int(plan.indices[-1]) not in held:
            index, frame = next(kept)
            held[index] = frame
        yield make_segment(plan.index, output.stack([held[int(i)] for i in plan.indices]),
                           window_seconds)
        held = {i: f for i, f in held.items() if i >= plan.stop}


def _kept_frames(video: _Video, wanted: list[int], size: tuple[int, int], seek: bool, output
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame at `size`) for each wanted index, ascending; decodes forward, seeks far."""
    frames = video.frames()
    position = -1  # index of the last decoded frame
    last_key, gop = None, 0  # last keyframe index; largest keyframe interval seen (lower bound)
    for target in wanted:
        jumped = False
        if seek and video.seekable and target - position > max(gop, MIN_SEEK_FRAMES):
            video.seek_to(target)
            frames, jumped = video.frames(), True
            last_key = None  # distances across a jump say nothing about the keyframe interval
        while position < target:
            frame = next(frames, None)
            if frame is None:
                raise _ShortStream(position + 1, video.error_reason())
            index = video.index_of(frame) if seek else position + 1
            if seek and not jumped and index != position + 1:
                raise _NotConstantRate()
            if jumped and index > target:  # the seek landed past the target: no exact frame
                raise _NotConstantRate()
            jumped = False
            position = index
            if frame.key_frame:
                if last_key is not None:
                    gop = max(gop, position - last_key)
                last_key = position
            elif last_key is not None:
                gop = max(gop, position - last_key)
            video.check_deadline()
        yield target, output.frame(frame, size)


class RGBFrames:
    """Kept frames as uint8 numpy RGB [H, W, 3] (swscale, _Scaler); clips as numpy [T, H, W, 3]."""

    @staticmethod
    def frame(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
        return _rgb(frame, size)

    @staticmethod
    def stack(frames: list[np.ndarray]) -> np.ndarray:
        return np.stack(frames)


def _rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    return _Scaler.for_thread(size).rgb(frame)


class _Scaler:
    """FFmpeg's own `scale=W:H:flags=area,format=rgb24` filter graph, as the CLI backend runs it:
    the same swscale set-up, so both backends give bit-identical clips (a bare frame.reformat
    differs by a few levels). Rebuilt when the frames' size or pixel format changes."""

    _local = threading.local()

    @classmethod
    def for_thread(cls, size: tuple[int, int]) -> _Scaler:
        scaler = getattr(cls._local, "scaler", None)
        if scaler is None or scaler.size != size:
            scaler = cls._local.scaler = cls(size)
        return scaler

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self._key = None

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:
            self._build(frame)
            self._key = key
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()

    def _build(self, frame: av.VideoFrame) -> None:
        height, width = self.size
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or Fraction(1, 25))
        scale = graph.add("scale", f"{width}:{height}:flags=area")
        rgb = graph.add("format", "rgb24")
        sink = graph.add("buffersink")
        source.link_to(scale)
        scale.link_to(rgb)
        rgb.link_to(sink)
        graph.configure()
        self._graph = graph


class _Video:
    """An opened container's first video stream, with FFmpeg's errors captured and a deadline."""

    def __init__(self, source, timeout_s: float, started: float, hwaccel=None):
        self._source, self._timeout_s, self._started = source, timeout_s, started
        self._allowed_s = timeout_s
        self._hwaccel = hwaccel

    def __enter__(self) -> _Video:
        self._logs = av.logging.Capture()
        self._captured = self._logs.__enter__()
        try:
            self._container = av.open(self._source, mode="r", hwaccel=self._hwaccel)
        except av.error.FFmpegError as exc:
            self._logs.__exit__(None, None, None)
            raise VideoDecodeError(self._open_reason(exc)) from None
        except Exception:
            self._logs.__exit__(None, None, None)
            raise
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _setup(self) -> None:
        container = self._container
        reject_non_video(container.format.name)
        if not container.streams.video:
            raise VideoDecodeError("no video stream (audio only or data only)")
        stream = self.stream = container.streams.video[0]
        if self._hwaccel is not None and not stream.codec_context.is_hwaccel:
            raise DecoderRefused(f"no hardware decoder for codec {stream.codec_context.name}")
        stream.codec_context.thread_count = 1  # parallelism comes from decoding many videos at once
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = Fraction(rate) if rate else Fraction(25)
        self.time_base = stream.time_base or Fraction(1, 1_000_000)
        self.start_pts = stream.start_time or 0
        ticks = self.time_base * self.fps  # frames per pts tick, exact
        self._ticks_num, self._ticks_den = ticks.numerator, ticks.denominator
        self.seekable = bool(getattr(self._source, "seekable", lambda: True)())
        self.announced_frames = stream.frames or self._count_packets()
        # The deadline follows the frames the demuxer indexed or counted (what decoding walks),
        # not the header's duration, which can claim anything (frame_plan.DEFAULT_TIMEOUT_S).
        self._allowed_s = deadline_s(self._timeout_s, float(self.announced_frames / self.fps))

    def __exit__(self, *exc) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
        self._logs.__exit__(None, None, None)

    def info(self, count: int) -> VideoInfo:
        stream = self.stream
        codec = stream.codec_context.name
        return VideoInfo(codec, stream.codec_context.width, stream.codec_context.height,
                         float(self.fps), float(count / self.fps), count)

    def frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames from the current position; decoding errors end the iteration (the
        caller sees where, and error_reason() says why)."""
        try:
            for packet in self._container.demux(self.stream):
                try:
                    yield from packet.decode()
                except av.error.InvalidDataError:
                    continue  # a damaged packet: FFmpeg logged it; later frames may still decode
        except av.error.FFmpegError:
            return

    def rewind(self) -> None:
        if self.seekable:
            self._container.seek(0, backward=True, any_frame=False, stream=self.stream)
        self.stream.codec_context.flush_buffers()

    def seek_to(self, index: int) -> None:
        """To the keyframe at or before frame `index` (the decoder is flushed)."""
        pts = self.start_pts + int(index / (self.fps * self.time_base))
        self._container.seek(pts, backward=True, any_frame=False, stream=self.stream)
        self.stream.codec_context.flush_buffers()

    def index_of(self, frame: av.VideoFrame) -> int:
        """round((pts - start) * time_base * fps), in integers (this runs for every frame)."""
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise _NotConstantRate()
        return (2 * (pts - self.start_pts) * self._ticks_num + self._ticks_den) // (2 * self._ticks_den)

    def count_frames(self) -> int:
        """Every frame decoded once, none converted: the exact count when the container's is off."""
        self.rewind()
        count = 0
        for _ in self.frames():
            count += 1
            self.check_deadline()
        if count == 0:
            raise VideoDecodeError(self.error_reason() or "no video frames could be decoded")
        return count

    def check_deadline(self) -> None:
        if time.monotonic() - self._started > self._allowed_s:
            raise VideoDecodeError(f"decode timed out after {self._allowed_s:g}s")

    def error_reason(self) -> str | None:
        errors = [message.strip() for level, _, message in self._captured
                  if level <= av.logging.ERROR and message.strip()]
        return errors[0] if errors else None

    def _count_packets(self) -> int:
        """Video packets, read without decoding (containers such as MKV carry no frame count).
        Under a deadline that grows with the packets counted (a frame each), as the CLI
        backend's grows with the frames decoded: the length is not known before."""
        count = 0
        for packet in self._container.demux(self.stream):
            if packet.size:
                count += 1
                if count % 1024 == 0:
                    self._allowed_s = deadline_s(self._timeout_s, float(count / self.fps))
                    self.check_deadline()
        return count

    def _open_reason(self, exc: av.error.FFmpegError) -> str:
        logged = [message.strip() for level, _, message in self._captured
                  if level <= av.logging.ERROR and message.strip()]
        if logged:
            return "ffmpeg: " + logged[0]
        return f"ffmpeg: {exc.strerror or exc}"
