"""One listed video -> its segment records, or one error record; and clip bytes <-> arrays.

The single place where a listed object is read and decoded, for every caller: classify and scan
(inference.py) and the training clip loader (clips.py). A record has the SEGMENT_SCHEMA columns:
the listing's video_uri/video_etag/video_bytes, the window (`segment`, start_s, end_s), what the
decoded stream says (duration_s, fps, width, height), the clip as raw uint8 bytes of a
[frames, size, size, 3] array (the same in-process and across Ray), and on failure `error` (the
reason) with `retry`: True when storage failed (the object may read fine next time) or the object
is no longer the version listed (overwritten between the listing and the read: records never claim
the listed ETag for other bytes; the next listing sees the new ETag), False when the bytes are not
a decodable video (final for that ETag); `decoded_on`: 'cpu' or 'nvdec', where the frames were
decoded (on an error record, where the decode that failed ran; null when the read failed).
`FallbackWindows` is the GPU actors' decode: NVDEC, and the CPU for a video NVDEC cannot take.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterable, Iterator

import numpy as np
import pyarrow as pa

from .frames import (DEFAULT_DECODER, DEFAULT_TIMEOUT_S, VideoDecodeError, VideoInfo,
                     iter_segments)
from .infrastructure import InfrastructureError
from .storage import open_video, opened_version

SEGMENT_SCHEMA = pa.schema([
    ("video_uri", pa.string()),
    ("video_etag", pa.string()),
    ("video_bytes", pa.int64()),
    ("segment", pa.int32()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("clip", pa.binary()),
    ("decoded_on", pa.string()),
    ("error", pa.string()),
    ("retry", pa.bool_()),
])

CPU = "cpu"  # `decoded_on` of the CPU backends (frames.DECODERS)


def decoded_on(decoder) -> str:
    """Where `decoder` (a frames.DECODERS name, or a decoder object such as NvdecDecoder) runs."""
    return getattr(decoder, "decoded_on", CPU)


class ChangedSinceListed(Exception):
    """The object read is not the version listed (another ETag or fingerprint)."""


class VideoWindows:
    """One listed video decoded one window at a time (frames.iter_segments), for callers that
    must not hold a long video's clips at once.

    Iterating yields (record, clip) per window as soon as it is decoded: the record has the
    SEGMENT_SCHEMA columns but `clip` (None), the clip is uint8 [frames, size, size, 3] (numpy; a
    tensor on the GPU for decode_nvdec.NvdecDecoder). Once the
    iteration ends, `records` holds what decode_video returns, without clips: the very records
    yielded (completed in place: the stream's columns, the last window ending where the video
    does), or one error record if the video failed, also after some windows were yielded. So a
    caller keeps what it derives from the windows until then. Never raises for one video.
    """

    def __init__(self, video: dict, frames: int, size: int, window_seconds: float | None,
                 data: bytes | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 decoder: str = DEFAULT_DECODER):
        self.listed = {key: video[key] for key in ("video_uri", "video_etag", "video_bytes")}
        self._decode = {"num_frames": frames, "size": (size, size),
                        "window_seconds": window_seconds, "timeout_s": timeout_s,
                        "decoder": decoder}
        self._data = data
        self.decoded_on = decoded_on(decoder)
        self.records: list[dict] = []

    def __iter__(self) -> Iterator[tuple[dict, np.ndarray]]:
        windows: list[dict] = []
        try:
            if self._data is not None:
                info = yield from self._windows(self._data, windows)
            else:
                with open_video(self.listed["video_uri"]) as source:
                    self._check_version(source)
                    info = yield from self._windows(source, windows)
                    if isinstance(source, str):  # FFmpeg read the path: was it replaced meanwhile?
                        self._check_version(source)
        except InfrastructureError:
            raise  # the node, not the video: fail the job (infrastructure.py)
        except Exception as exc:
            self.records = [self._failure(exc)]
            return
        stream = {"duration_s": info.duration_s, "fps": info.fps, "width": info.width,
                  "height": info.height}
        for window in windows:
            window.update(stream)
        windows[-1]["end_s"] = info.duration_s  # the last window ends with the video
        self.records = windows

    def _check_version(self, source) -> None:
        """ChangedSinceListed unless `source` reads the version the listing saw (its ETag or
        size+mtime fingerprint): rows must never claim the listed ETag for other bytes. A caller
        that lists no version (the clip loader: ETag "") reads whatever is there."""
        if not self.listed["video_etag"]:
            return
        opened = opened_version(source, self.listed["video_uri"])
        if opened is not None and opened != self.listed["video_etag"]:
            raise ChangedSinceListed(f"listed as {self.listed['video_etag']}, read as {opened}")

    def _windows(self, source, windows: list[dict]) -> Generator[tuple[dict, np.ndarray], None,
                                                                   VideoInfo]:
        segments = iter_segments(source, **self._decode)
        while True:
            try:
                segment = next(segments)
            except StopIteration as finished:
                return finished.value
            window = {**self.listed, "segment": segment.index, "start_s": segment.start_s,
                      "end_s": segment.end_s, "duration_s": None, "fps": None, "width": None,
                      "height": None, "clip": None, "decoded_on": self.decoded_on, "error": None,
                  "retry": False}
            windows.append(window)
            yield window, segment.clip

    def _failure(self, exc: Exception) -> dict:
        listed = self.listed
        if isinstance(exc, VideoDecodeError):
            if str(exc).startswith("empty") and (listed["video_bytes"] or 0) > 0:
                # The listing saw bytes that the read did not get: the store failed, not the video.
                return error_record(listed, f"cannot read input: the store returned 0 of "
                                            f"{listed['video_bytes']} bytes", retry=True)
            return error_record(listed, str(exc), retry=False, decoded_on=self.decoded_on)
        if isinstance(exc, FileNotFoundError):  # gone since listed: the next listing says what happened
            return error_record(listed, "cannot read input: deleted since it was listed", retry=True)
        # Overwritten before the read (ChangedSinceListed) or during it (s3fs's FileExpired: its
        # pinned ETag no longer matches): the next listing has the new ETag.
        if isinstance(exc, ChangedSinceListed) or type(exc).__name__ == "FileExpired":
            return error_record(listed, "cannot read input: changed since it was listed", retry=True)
        # storage (network, throttling, permissions): worth another try later
        return error_record(listed, f"cannot read input: {type(exc).__name__}", retry=True)


class FallbackWindows:
    """VideoWindows of a GPU actor: decoded by `gpu_decoder` (decode_nvdec.NvdecDecoder), or, when
    that fails to decode the video (DecoderRefused: a codec, profile or size NVDEC cannot take;
    or any other decode error), decoded again on this actor's CPU by PyAV. The windows of the
    failed pass were yielded but are not among `records` (VideoWindows' rule for a video that
    fails halfway), so the caller drops them. `fell_back` says whether the CPU decoded it; a
    storage failure is not retried on the CPU (the read failed, not the decoder)."""

    def __init__(self, video: dict, frames: int, size: int, window_seconds: float | None,
                 gpu_decoder, timeout_s: float = DEFAULT_TIMEOUT_S):
        self._args = (video, frames, size, window_seconds)
        self._timeout_s, self._gpu_decoder = timeout_s, gpu_decoder
        self.records: list[dict] = []
        self.fell_back = False
        self.refusal: str | None = None  # the GPU decoder's reason, when it fell back

    def __iter__(self) -> Iterator[tuple[dict, object]]:
        on_gpu = VideoWindows(*self._args, timeout_s=self._timeout_s, decoder=self._gpu_decoder)
        yield from on_gpu
        failed = on_gpu.records[0]
        if failed["error"] is None or failed["retry"]:
            self.records = on_gpu.records
            return
        self.fell_back, self.refusal = True, failed["error"]
        on_cpu = VideoWindows(*self._args, timeout_s=self._timeout_s, decoder=DEFAULT_DECODER)
        yield from on_cpu
        self.records = on_cpu.records


def decode_video(video: dict, frames: int, size: int, window_seconds: float | None,
                 data: bytes | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 decoder: str = DEFAULT_DECODER) -> list[dict]:
    """A record per segment of one listed video (`video` has video_uri/video_etag/video_bytes),
    or one error record. Reads the object (a seekable file: range reads on object stores) unless
    `data` is given; never raises for one video. `decoder`: frames.DECODERS."""
    decoded = VideoWindows(video, frames, size, window_seconds, data, timeout_s, decoder)
    clips = [clip for _, clip in decoded]
    if decoded.records[0]["error"] is not None:
        return decoded.records
    return [{**record, "clip": clip.tobytes()} for record, clip in zip(decoded.records, clips)]


def error_record(video: dict, reason: str, retry: bool, decoded_on: str | None = None) -> dict:
    return {**video, "segment": 0, "start_s": None, "end_s": None, "duration_s": None,
            "fps": None, "width": None, "height": None, "clip": b"", "decoded_on": decoded_on,
            "error": reason, "retry": retry}


SPILL_BYTES = 32 * 1024 * 1024  # a video's clips beyond this wait on local disk, not in memory
WINDOWS_PER_TABLE = 64  # segment records per table a long video is handed on in


def decode_batch(videos: pa.Table, frames: int, size: int, window_seconds: float | None,
                 decoder: str = DEFAULT_DECODER, timeout_s: float = DEFAULT_TIMEOUT_S
                 ) -> Iterable[pa.Table]:
    """Ray Data step: a batch of listed videos -> SEGMENT_SCHEMA tables of at most
    WINDOWS_PER_TABLE records, never two videos in one table. A video's tables come out once it
    has decoded whole (one that fails halfway is one error record and nothing else); until then
    its clips wait in a spooled temporary file, in memory up to SPILL_BYTES and on local disk
    beyond, so a long video does not hold all its clips in memory. `timeout_s`:
    frames.DEFAULT_TIMEOUT_S."""
    clip_bytes = frames * size * size * 3
    for video in videos.select(["video_uri", "video_etag", "video_bytes"]).to_pylist():
        decoded = VideoWindows(video, frames, size, window_seconds, timeout_s=timeout_s,
                               decoder=decoder)
        with tempfile.SpooledTemporaryFile(max_size=SPILL_BYTES) as clips:
            for _, clip in decoded:
                clips.write(clip.tobytes())
            if decoded.records[0]["error"] is not None:
                yield records_to_table(decoded.records)
                continue
            clips.seek(0)
            for start in range(0, len(decoded.records), WINDOWS_PER_TABLE):
                chunk = decoded.records[start:start + WINDOWS_PER_TABLE]
                yield records_to_table([{**record, "clip": clips.read(clip_bytes)}
                                        for record in chunk])


def decode_task(videos: pa.Table, frames: int, size: int, window_seconds: float | None,
                progress=None, decoder: str = DEFAULT_DECODER, timeout_s: float = DEFAULT_TIMEOUT_S
                ) -> Iterable[pa.Table]:
    """The Ray Data decode step of classify and scan (inference.predictions): decode_batch, plus
    telling the job's log (`progress`: a progress.Progress handle) where it ran, and the test hook
    before decoding. It
    lives here, not in inference.py, so decode workers never import torch."""
    from . import faults
    from .progress import report_node

    report_node(progress)
    faults.pause("decoding")
    yield from decode_batch(videos, frames, size, window_seconds, decoder, timeout_s)


def records_to_table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=SEGMENT_SCHEMA)


def clip_array(raw: bytes, frames: int, size: int) -> np.ndarray:
    """A record's clip bytes -> uint8 [frames, size, size, 3]."""
    return np.frombuffer(raw, np.uint8).reshape(frames, size, size, 3)


def clip_arrays(raws: Iterable[bytes], frames: int, size: int) -> np.ndarray:
    """Clip bytes -> uint8 [N, frames, size, size, 3]."""
    clips = [clip_array(raw, frames, size) for raw in raws]
    if not clips:
        return np.zeros((0, frames, size, size, 3), np.uint8)
    return np.stack(clips)
