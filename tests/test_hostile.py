"""Hostile inputs: each file gets exactly one well-formed outcome in classify and in scan (its
segment rows, or one error row with a reason), and none of them hangs or fails the job.

One folder of generated hostile files goes through one classify and one scan (the shared Ray);
the test is parametrized over the files. Not covered here: a container that lies about its
duration, a decoder-deadline file, and S3 directory markers.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from videos import run_ffmpeg, write_testsrc

from pipeline.cli import main as vidpipe
from pipeline.models.checkpoint import ModelConfig, save_checkpoint

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
}


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
    base.unlink()
    assert sorted(path.name for path in folder.iterdir()) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def outcomes(ray_local, tmp_path_factory) -> dict[str, dict[str, list[tuple]]]:
    """{"classify"|"scan": {file name: [(status, error, segment), ...]}} from one run of each."""
    root = tmp_path_factory.mktemp("hostile")
    _write_hostile(root / "in")
    config = ModelConfig("cnn3d_gru32", ("A", "B"), frames=8, size=32)
    torch.manual_seed(0)
    save_checkpoint(config.build(), config, root / "model.pt")
    common = ["--model", str(root / "model.pt"), "--window-seconds", "0", "--error-threshold", "1"]
    assert vidpipe(["classify", str(root / "in"), str(root / "classified"), *common]) == 0
    assert vidpipe(["scan", str(root / "in"), str(root / "scanned"), *common]) == 0
    found = {}
    for kind, pattern in (("classify", "classified/*.parquet"),
                          ("scan", "scanned/predictions/**/*.parquet")):
        rows = duckdb.sql(f"select video_uri, status, error, segment from "
                          f"read_parquet('{root / pattern}', hive_partitioning=true)").fetchall()
        by_name: dict[str, list[tuple]] = {}
        for uri, status, error, segment in rows:
            by_name.setdefault(Path(uri).name, []).append((status, error, segment))
        found[kind] = by_name
    return found


@pytest.mark.slow
@pytest.mark.parametrize("job", ["classify", "scan"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_hostile_file_has_exactly_one_well_formed_outcome(outcomes, job, name):
    rows = outcomes[job].get(name)
    assert rows, f"{name} is missing from the {job} output"
    assert set(outcomes[job]) == set(EXPECTED)  # and nothing else turned up
    statuses = {status for status, _, _ in rows}
    assert statuses == {EXPECTED[name]}, rows
    if EXPECTED[name] == "error":
        assert len(rows) == 1 and rows[0][1] and "\n" not in rows[0][1], rows
    else:
        segments = sorted(segment for _, _, segment in rows)
        assert segments == list(range(len(segments))), rows  # each segment once
