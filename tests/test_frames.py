"""Frame sampling and probing with the real ffmpeg on real encoded videos, through both decoding
backends (`decoder`: the in-process PyAV one and the ffmpeg CLI one give the same clips, bit for
bit, and the same reasons)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
from videos import (decode_index, index_frames, write_h264, write_lossless_index_video,
                    write_sparse_key_index_video, write_testsrc)

from pipeline.frames import (DECODERS, VideoDecodeError, decode_frames, plan_windows, probe,
                             sample_clip, sample_indices, sample_segments)


@pytest.fixture(params=DECODERS)
def decoder(request) -> str:
    return request.param


@pytest.mark.parametrize("count", [1, 7, 20, 57, 300])
def test_sampled_frames_are_uniform_over_all_decoded_frames(tmp_path: Path, count: int, decoder):
    video = write_lossless_index_video(tmp_path / f"index{count}.mkv", count)
    clip = sample_clip(video, num_frames=20, size=(32, 48), decoder=decoder)
    expected = np.round(np.linspace(0, count - 1, 20)).astype(int)
    assert decode_index(clip).tolist() == expected.tolist()
    assert clip.shape == (20, 32, 48, 3) and clip.dtype == np.uint8


def test_short_video_repeats_frames_first_and_last_included(tmp_path: Path, decoder):
    video = write_lossless_index_video(tmp_path / "short.mkv", 5)
    indices = decode_index(sample_clip(video, num_frames=20, decoder=decoder))
    assert indices[0] == 0 and indices[-1] == 4
    assert sorted(set(indices.tolist())) == [0, 1, 2, 3, 4]


def test_h264_mp4_from_path_uri_and_bytes_give_the_same_clip(tmp_path: Path, decoder):
    # Gray levels 8 apart survive lossy H.264, so the indices can still be read back.
    frames = np.repeat((np.arange(30) * 8).astype(np.uint8)[:, None, None, None], 3, axis=3)
    frames = np.broadcast_to(frames, (30, 48, 64, 3)).copy()
    video = write_h264(tmp_path / "gray.mp4", frames)
    from_path = sample_clip(video, num_frames=10, decoder=decoder)
    from_uri = sample_clip(f"file://{video}", decoder=decoder)
    from_bytes = sample_clip(video.read_bytes(), num_frames=10, decoder=decoder)
    with open(video, "rb") as handle:
        from_file = sample_clip(handle, num_frames=10, decoder=decoder)
    assert np.array_equal(from_path, from_bytes) and np.array_equal(from_path, from_file)
    assert from_uri.shape == (20, 64, 64, 3)
    read_back = np.round(from_path[..., 0].mean(axis=(1, 2)) / 8).astype(int)
    assert read_back.tolist() == np.round(np.linspace(0, 29, 10)).astype(int).tolist()


def test_sample_indices_is_the_documented_formula():
    assert sample_indices(100, 20).tolist() == np.round(np.linspace(0, 99, 20)).astype(int).tolist()
    assert sample_indices(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        sample_indices(0, 20)


def test_probe_reports_stream_facts(tmp_path: Path, decoder):
    video = write_testsrc(tmp_path / "probe me.mp4", seconds=2, size="160x120", fps=25)
    info = probe(video, decoder=decoder)
    assert (info.codec, info.width, info.height, info.fps, info.num_frames) == ("h264", 160, 120, 25.0, 50)
    assert info.duration_s == pytest.approx(2.0)
    decoded_info, frames = decode_frames(video, size=(24, 32), decoder=decoder)
    assert decoded_info == info and frames.shape == (50, 24, 32, 3)


def test_windows_are_consecutive_with_exact_bounds(tmp_path: Path, decoder):
    video = write_lossless_index_video(tmp_path / "long.mkv", 250, fps=25)  # 10 s
    info, segments = sample_segments(video, num_frames=4, window_seconds=3.0, decoder=decoder)
    # The last second (a third of a window) joins the window before it.
    assert [s.index for s in segments] == [0, 1, 2]
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 3.0), (3.0, 6.0), (6.0, 10.0)]
    # Each window samples only its own frames, first and last included.
    assert decode_index(segments[0].clip).tolist() == [0, 25, 49, 74]
    assert decode_index(segments[2].clip).tolist() == [150, 183, 216, 249]
    _, halves = sample_segments(video, num_frames=4, window_seconds=4.0, decoder=decoder)
    # 10 s at 4 s windows: a remainder of 2 s (half a window) stands alone.
    assert [(s.start_s, s.end_s) for s in halves] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    _, whole = sample_segments(video, num_frames=4, window_seconds=60, decoder=decoder)
    assert len(whole) == 1 and (whole[0].start_s, whole[0].end_s) == (0.0, 10.0)


@pytest.mark.parametrize("kind", ["empty", "random_bytes", "text", "truncated", "audio_only"])
def test_bad_inputs_raise_video_decode_error_with_a_reason(bad_videos, kind, decoder):
    with pytest.raises(VideoDecodeError) as caught:
        sample_clip(bad_videos[kind], decoder=decoder)
    reason = str(caught.value)
    assert reason and "\n" not in reason
    with pytest.raises(VideoDecodeError):
        sample_clip(bad_videos[kind].read_bytes(), decoder=decoder)


def test_specific_reasons(bad_videos, tmp_path: Path, decoder):
    def reason(source):
        with pytest.raises(VideoDecodeError) as caught:
            sample_clip(source, decoder=decoder)
        return str(caught.value)

    assert "empty" in reason(bad_videos["empty"])
    assert "no video stream" in reason(bad_videos["audio_only"])
    assert "moov atom not found" in reason(bad_videos["truncated"])
    assert reason(bad_videos["text"]).startswith("ffmpeg: ")  # opened as MP4 because of its name
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text that ffmpeg would render as a video\n" * 50)
    assert "not a video: a text file" in reason(notes)
    assert "cannot read" in reason(tmp_path / "missing.mp4")
    assert "cannot read" in reason(tmp_path)  # a folder is not a readable file


def test_truncated_faststart_video_is_rejected_not_half_decoded(tmp_path: Path, decoder):
    good = write_testsrc(tmp_path / "fast.mp4", seconds=4, faststart=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # index intact, half the frames gone
    with pytest.raises(VideoDecodeError, match="truncated or corrupt"):
        sample_clip(cut, decoder=decoder)


def _zombie_children() -> list[int]:
    zombies = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                zombies.append(int(pid))
    return zombies


def test_timeout_stops_the_decode_and_leaves_no_zombies(tmp_path: Path, decoder):
    video = write_testsrc(tmp_path / "slow.mp4", seconds=20, size="640x480", fps=30)
    started = time.perf_counter()
    with pytest.raises(VideoDecodeError, match="timed out"):
        sample_clip(video, timeout_s=0.005, decoder=decoder)
    assert time.perf_counter() - started < 5
    for bad in ("empty", "random_bytes"):
        try:
            sample_clip(tmp_path / bad, decoder=decoder)
        except VideoDecodeError:
            pass
    assert _zombie_children() == []


def test_index_frames_helper_roundtrip():
    assert decode_index(index_frames(600)).tolist() == list(range(600))


def test_both_decoders_give_bit_identical_clips(tmp_path: Path):
    # Scaled by FFmpeg's own `scale=...:flags=area,format=rgb24` graph in both: no tolerance.
    video = write_testsrc(tmp_path / "pattern.mp4", seconds=3, size="320x240", fps=25)
    pyav = sample_segments(video, num_frames=8, size=(64, 64), window_seconds=1.0, decoder="pyav")
    cli = sample_segments(video, num_frames=8, size=(64, 64), window_seconds=1.0, decoder="ffmpeg")
    assert pyav[0] == cli[0]
    assert [(s.index, s.start_s, s.end_s) for s in pyav[1]] == [(s.index, s.start_s, s.end_s) for s in cli[1]]
    assert all(np.array_equal(a.clip, b.clip) for a, b in zip(pyav[1], cli[1]))


@pytest.mark.parametrize("keyint,bframes", [(250, 3), (30, 0)])
def test_sparse_keyframes_long_video_exact_indices_per_window(tmp_path: Path, keyint, bframes, decoder):
    # 3001 frames (2 minutes at 25 fps) of lossless index-coded H.264: the PyAV backend seeks to
    # the keyframe before far targets and must still land on exactly round(linspace) per window.
    video = write_sparse_key_index_video(tmp_path / "sparse.mp4", 3001, keyint=keyint, bframes=bframes)
    info, [whole] = sample_segments(video, num_frames=20, size=(48, 64), decoder=decoder)
    assert info.num_frames == 3001 and info.fps == 25.0
    assert decode_index(whole.clip).tolist() == np.round(np.linspace(0, 3000, 20)).astype(int).tolist()
    info, segments = sample_segments(video, num_frames=5, size=(48, 64), window_seconds=7.0,
                                     decoder=decoder)
    plans = plan_windows(3001, 25.0, 5, 7.0)
    assert len(segments) == len(plans) == 17  # 17 windows of 7 s; the last 1.04 s joins the 17th
    for segment, plan in zip(segments, plans):
        assert decode_index(segment.clip).tolist() == plan.indices.tolist()
        assert plan.first <= plan.indices[0] and plan.indices[-1] == plan.stop - 1


def test_variable_frame_rate_is_sampled_by_frame_count_not_timestamps(tmp_path: Path, decoder):
    # Timestamps that are not i / fps: PyAV must not trust them to address frames.
    video = write_sparse_key_index_video(tmp_path / "vfr.mp4", 300, keyint=50, vfr=True)
    clip = sample_clip(video, num_frames=20, size=(48, 64), decoder=decoder)
    assert decode_index(clip).tolist() == np.round(np.linspace(0, 299, 20)).astype(int).tolist()


def test_plan_windows_is_round_linspace_over_each_window():
    plans = plan_windows(250, 25.0, 4, 3.0)
    assert [(p.index, p.first, p.stop) for p in plans] == [(0, 0, 75), (1, 75, 150), (2, 150, 250)]
    assert plans[2].indices.tolist() == [150, 183, 216, 249]
    # A remainder of at least half a window stands alone; under half, it joins the last window.
    assert [(p.first, p.stop) for p in plan_windows(113, 25.0, 4, 3.0)] == [(0, 75), (75, 113)]
    assert [(p.first, p.stop) for p in plan_windows(112, 25.0, 4, 3.0)] == [(0, 112)]
    assert [(p.first, p.stop) for p in plan_windows(85, 25.0, 4, 3.0)] == [(0, 85)]  # 3.4 s: one
    assert [p.indices.tolist() for p in plan_windows(7, 30.0, 3, None)] == [[0, 3, 6]]


def test_deadline_grows_with_the_duration():
    from pipeline.frames import deadline_s

    assert deadline_s(120.0, 5.0) == 120.0
    assert deadline_s(120.0, 3600.0) == 120.0 * 60


class _CountingFile:
    """A read-only file that counts the bytes read through it."""

    def __init__(self, path: Path):
        self._handle = open(path, "rb")
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def seekable(self) -> bool:
        return True


def test_pyav_sampling_reads_a_fraction_of_a_long_file_object(tmp_path: Path):
    video = write_testsrc(tmp_path / "long.mp4", seconds=40, size="320x240", keyint=25)
    counted = _CountingFile(video)
    clip = sample_clip(counted, num_frames=8, decoder="pyav")
    assert np.array_equal(clip, sample_clip(video, num_frames=8, decoder="ffmpeg"))
    assert counted.bytes_read < 0.5 * video.stat().st_size


def test_s3_video_is_read_by_ranges_not_downloaded_whole(tmp_path: Path, s3fs_client, monkeypatch):
    from pipeline import segments, storage

    video = write_testsrc(tmp_path / "long.mp4", seconds=80, size="320x240", keyint=25)
    s3fs_client.mkdir("ranges")
    s3fs_client.pipe("ranges/long.mp4", video.read_bytes())
    monkeypatch.setattr(storage, "VIDEO_BLOCK_BYTES", 16 * 1024)  # small blocks: a small video
    requested = []

    @contextlib.contextmanager
    def spy(uri):
        with storage.open_video(uri) as handle:
            yield handle
            if not isinstance(handle, str):  # a local path is handed over as it is
                requested.append(handle.cache.total_requested_bytes)

    monkeypatch.setattr(segments, "open_video", spy)
    listed = {"video_uri": "s3://ranges/long.mp4", "video_bytes": 0,
              "video_etag": storage.fingerprint("s3://ranges/long.mp4")}
    [remote] = segments.decode_video(listed, 8, 64, None)
    [local] = segments.decode_video({**listed, "video_uri": str(video),
                                     "video_etag": storage.fingerprint(str(video))}, 8, 64, None)
    assert remote["error"] is None and remote["clip"] == local["clip"]
    assert 0 < requested[0] < 0.5 * video.stat().st_size


def test_windows_stream_one_at_a_time_with_the_same_clips(tmp_path: Path, decoder):
    """iter_segments yields the windows of sample_segments in order, each as its frames arrive;
    the VideoInfo is the generator's return value; the last window's end is fixed by the caller."""
    from pipeline.frames import iter_segments

    video = write_lossless_index_video(tmp_path / "long.mkv", 250, fps=25)  # 10 s
    info, listed = sample_segments(video, num_frames=4, window_seconds=3.0, decoder=decoder)
    stream = iter_segments(video, num_frames=4, window_seconds=3.0, decoder=decoder)
    streamed = []
    while True:
        try:
            streamed.append(next(stream))
        except StopIteration as finished:
            assert finished.value == info
            break
    assert [s.index for s in streamed] == [s.index for s in listed]
    assert all(np.array_equal(a.clip, b.clip) for a, b in zip(streamed, listed))
    assert streamed[-1].end_s == 9.0 and listed[-1].end_s == 10.0  # nominal until the end is known
    first = next(iter_segments(video, num_frames=4, window_seconds=3.0, decoder=decoder))
    assert decode_index(first.clip).tolist() == [0, 25, 49, 74]  # a stream may stop early


def test_streaming_windows_hold_one_window_not_the_whole_video(tmp_path: Path, decoder):
    """Peak Python/numpy memory while streaming 120 windows stays near one window's clip; the list
    API holds all of them (tracemalloc sees numpy's buffers)."""
    import tracemalloc

    from pipeline.frames import iter_segments

    video = write_lossless_index_video(tmp_path / "long.mkv", 3000, fps=25)  # 120 one-second windows
    clip_bytes = 20 * 64 * 64 * 3
    peaks = {}
    for api in ("list", "stream"):
        tracemalloc.start()
        if api == "list":
            _, segments = sample_segments(video, num_frames=20, size=(64, 64), window_seconds=1.0,
                                          decoder=decoder)
            assert len(segments) == 120
            del segments
        else:
            assert sum(1 for _ in iter_segments(video, num_frames=20, size=(64, 64),
                                                window_seconds=1.0, decoder=decoder)) == 120
        peaks[api] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["list"] > 100 * clip_bytes  # every clip at once
    assert peaks["stream"] < 8 * clip_bytes, peaks  # a window's frames and clip, a few buffers
