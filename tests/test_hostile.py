"""Hostile inputs: each file gets exactly one well-formed outcome in classify and in scan (its
segment rows, or one error row with a reason), and none of them hangs or fails the job.

One folder of generated hostile files goes through one classify and one scan (the shared Ray);
the test is parametrized over the files. Containers whose header lies about the duration (MP4
movie/track/media headers and edit list, a Matroska Duration element; longer and shorter than the
stream) give the stream's true duration. Two more runs of each job:
- the decode deadline: a file that takes seconds to decode and whose header claims a day (which
  must not buy it a day), beside a normal clip, under `--decode-timeout 1`: one error row saying
  the decode timed out, the clip's row, the job ends;
- S3 (the moto server): a 0-byte object gives one error row; "directory marker" objects (keys
  ending in "/", 0 bytes, one of them named like a video) are not videos and are not listed.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
from checkpoints import untrained_checkpoint
from videos import run_ffmpeg, scale_mkv_duration, scale_mp4_durations, write_testsrc

from pipeline.cli import main as vidpipe
from pipeline.frames import VideoDecodeError, sample_segments

# name -> expected status ("ok" or "error")
EXPECTED = {
    "empty.mp4": "error",
    "truncated.mp4": "error",
    "random.mp4": "error",
    "text.avi": "error",
    "audio_only.mp4": "error",
    "one_frame.mp4": "ok",
    "tiny_16x16.mp4": "ok",
    "uhd_3840x2160.mp4": "ok",
    "variable_rate.mkv": "ok",
    "rotated_90.mp4": "ok",
    "with space.mp4": "ok",
    "quote'and\"double.mp4": "ok",
    "ünïcødé-视频.mp4": "ok",
    "-leading-dash.mp4": "ok",
    "lies_longer.mp4": "ok",
    "lies_shorter.mp4": "ok",
    "lies_longer.mkv": "ok",
    "lies_shorter.mkv": "ok",
}
BASE_SECONDS = 1.0  # the base clip every lying container is made from


def _write_hostile(folder: Path) -> None:
    folder.mkdir()
    base = write_testsrc(folder.parent / "base.mp4", 1, size="64x48")
    data = base.read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "random.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20_000,
                                                                           np.uint8).tobytes())
    (folder / "text.avi").write_text("not a video, just text\n" * 100)
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", "-f", "mp4",
               str(folder / "audio_only.mp4"))
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "1",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "one_frame.mp4"))
    write_testsrc(folder / "tiny_16x16.mp4", 1, size="16x16")
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=5", "-frames:v", "3",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
               str(folder / "uhd_3840x2160.mp4"))
    # Variable frame rate: every third frame kept with its original timestamp.
    run_ffmpeg("-i", str(base), "-vf", "select='not(mod(n\\,3))+lt(n\\,5)'", "-fps_mode", "vfr",
               "-c:v", "libx264", "-preset", "ultrafast", str(folder / "variable_rate.mkv"))
    run_ffmpeg("-display_rotation", "90", "-i", str(base), "-c", "copy",
               str(folder / "rotated_90.mp4"))
    for name in ("with space.mp4", "quote'and\"double.mp4", "ünïcødé-视频.mp4",
                 "-leading-dash.mp4"):
        (folder / name).write_bytes(data)
    (folder / "lies_longer.mp4").write_bytes(scale_mp4_durations(data, 1000))
    (folder / "lies_shorter.mp4").write_bytes(scale_mp4_durations(data, 0.01))
    run_ffmpeg("-i", str(base), "-c", "copy", str(folder.parent / "base.mkv"))
    mkv = (folder.parent / "base.mkv").read_bytes()
    (folder / "lies_longer.mkv").write_bytes(scale_mkv_duration(mkv, 1000))
    (folder / "lies_shorter.mkv").write_bytes(scale_mkv_duration(mkv, 0.01))
    base.unlink()
    assert sorted(path.name for path in folder.iterdir()) == sorted(EXPECTED)


def _checkpoint(folder: Path) -> Path:
    return untrained_checkpoint(folder / "model.pt", frames=8, size=32)


def _run_both(source: str, root: Path, *options: str) -> dict[str, dict[str, list[tuple]]]:
    """One classify and one scan of `source` (whole videos, no error threshold) ->
    {"classify"|"scan": {file name: [(status, error, segment, duration_s), ...]}}."""
    common = ["--model", str(_checkpoint(root)), "--window-seconds", "0", "--error-threshold", "1",
              *options]
    assert vidpipe(["classify", source, str(root / "classified"), *common]) == 0
    assert vidpipe(["scan", source, str(root / "scanned"), *common]) == 0
    found = {}
    for kind, pattern in (("classify", "classified/*.parquet"),
                          ("scan", "scanned/predictions/**/*.parquet")):
        rows = duckdb.sql(f"select video_uri, status, error, segment, duration_s from "
                          f"read_parquet('{root / pattern}', hive_partitioning=true)").fetchall()
        by_name: dict[str, list[tuple]] = {}
        for uri, *outcome in rows:
            by_name.setdefault(Path(uri).name, []).append(tuple(outcome))
        found[kind] = by_name
    return found


def _assert_one_outcome(rows: list[tuple] | None, expected: str, name: str) -> None:
    assert rows, f"{name} is missing from the output"
    assert {status for status, *_ in rows} == {expected}, rows
    if expected == "error":
        assert len(rows) == 1 and rows[0][1] and "\n" not in rows[0][1], rows
    else:
        segments = sorted(segment for _, _, segment, _ in rows)
        assert segments == list(range(len(segments))), rows  # each segment once


@pytest.fixture(scope="module")
def outcomes(ray_local, tmp_path_factory) -> dict[str, dict[str, list[tuple]]]:
    root = tmp_path_factory.mktemp("hostile")
    _write_hostile(root / "in")
    return _run_both(str(root / "in"), root)


@pytest.mark.slow
@pytest.mark.parametrize("job", ["classify", "scan"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_hostile_file_has_exactly_one_well_formed_outcome(outcomes, job, name):
    rows = outcomes[job].get(name)
    assert set(outcomes[job]) == set(EXPECTED)  # and nothing else turned up
    _assert_one_outcome(rows, EXPECTED[name], name)
    if name.startswith("lies_"):  # the stream's duration, whatever the header claims
        assert [duration for *_, duration in rows] == [pytest.approx(BASE_SECONDS)], rows


# --- the decode deadline ------------------------------------------------------------------------

# 118,000 16x16 frames in one GOP: seconds of decoding (3-10 s here), all within one minute of
# video, so the deadline is exactly --decode-timeout.
SLOW_FPS, SLOW_SECONDS = 2000, 59


@pytest.fixture(scope="module")
def slow_video(tmp_path_factory) -> Path:
    """An MKV that takes seconds to decode (every frame must be decoded: one keyframe) and whose
    Duration element claims a day, so a deadline taken from the header would be a day long."""
    folder = tmp_path_factory.mktemp("slow")
    honest = folder / "honest.mkv"
    run_ffmpeg("-f", "lavfi", "-i", f"testsrc=size=16x16:rate={SLOW_FPS}:duration={SLOW_SECONDS}",
               "-c:v", "libx264", "-preset", "ultrafast", "-g", "1000000", "-pix_fmt", "yuv420p",
               str(honest))
    slow = folder / "slow_claims_a_day.mkv"
    slow.write_bytes(scale_mkv_duration(honest.read_bytes(), 24 * 3600 / SLOW_SECONDS))
    honest.unlink()
    return slow


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_a_header_claiming_a_day_does_not_extend_the_decode_deadline(slow_video, decoder):
    # One started minute of frames: the deadline is timeout_s, not timeout_s per claimed minute.
    with pytest.raises(VideoDecodeError, match=r"^decode timed out after 1s$"):
        sample_segments(str(slow_video), num_frames=8, size=(32, 32), timeout_s=1.0,
                        decoder=decoder)


@pytest.mark.slow
def test_a_decode_past_the_deadline_is_one_error_row_and_the_job_ends(ray_local, slow_video,
                                                                      tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / slow_video.name).write_bytes(slow_video.read_bytes())
    write_testsrc(tmp_path / "in" / "normal.mp4", 1, size="64x48")
    found = _run_both(str(tmp_path / "in"), tmp_path, "--decode-timeout", "1")
    for job in ("classify", "scan"):
        assert set(found[job]) == {slow_video.name, "normal.mp4"}, found[job]
        _assert_one_outcome(found[job]["normal.mp4"], "ok", "normal.mp4")
        _assert_one_outcome(found[job][slow_video.name], "error", slow_video.name)
        assert found[job][slow_video.name][0][1] == "decode timed out after 1s"


# --- S3: an empty object and directory markers -------------------------------------------------


@pytest.mark.slow
def test_s3_empty_object_is_one_error_row_and_directory_markers_are_not_videos(
        ray_local, s3fs_client, tmp_path):
    good = write_testsrc(tmp_path / "good.mp4", 1, size="64x48").read_bytes()
    s3fs_client.mkdir("hostile")
    objects = {"in/good.mp4": good, "in/sub/also-good.mp4": good, "in/zero.mp4": b"",
               # directory markers, as S3 consoles and some tools create them
               "in/": b"", "in/sub/": b"", "in/only-a-marker/": b"", "in/marker.mp4/": b""}
    for key, body in objects.items():
        s3fs_client.pipe(f"hostile/{key}", body)
    found = _run_both("s3://hostile/in", tmp_path)
    for job in ("classify", "scan"):
        rows = found[job]
        assert sorted(rows) == ["also-good.mp4", "good.mp4", "zero.mp4"], rows  # no markers
        _assert_one_outcome(rows["good.mp4"], "ok", "good.mp4")
        _assert_one_outcome(rows["also-good.mp4"], "ok", "also-good.mp4")
        _assert_one_outcome(rows["zero.mp4"], "error", "zero.mp4")
        assert rows["zero.mp4"][0][1] == "empty input (0 bytes)"
