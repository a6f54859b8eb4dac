"""Distributed classification with Ray Data, end to end with real parts: moto S3 over HTTP,
real encoded videos, an in-process Ray, and a real two-node Ray cluster on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import torch
from checkpoints import MOTION_CLASSES, untrained_checkpoint
from fixtures.ray_cluster import last_json
from videos import write_testsrc

from pipeline.cli import main as vidpipe
from pipeline.frames import sample_clip
from pipeline.models import clips_to_tensor
from pipeline.models.checkpoint import ModelConfig, load_checkpoint
from pipeline.rows import PREDICTION_SCHEMA

CLASSES = MOTION_CLASSES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", CLASSES, seed=3,
                                frames=12, size=48)


def test_classify_s3_to_s3(ray_local, s3_endpoint, s3fs_client, motion_corpus, bad_videos,
                           checkpoint, capsys):
    s3fs_client.mkdir("videos")
    uploads = {}
    for source in sorted(motion_corpus.glob("MoveRight/*.mp4"))[:5]:
        uploads[f"videos/in/good/{source.name}"] = source
    special = sorted(motion_corpus.glob("MoveUp/*.mp4"))[0]
    uploads["videos/in/names/clip one ü.mp4"] = special
    uploads["videos/in/names/日本 語.mp4"] = special
    for kind, path in bad_videos.items():
        uploads[f"videos/in/bad/{kind}.mp4"] = path
    for key, source in uploads.items():
        s3fs_client.pipe(key, source.read_bytes())
    s3fs_client.pipe("videos/in/notes.txt", b"not listed: wrong extension")

    code = vidpipe(["classify", "s3://videos/in", "s3://videos/out", "--model", str(checkpoint),
                    "--s3-endpoint-url", s3_endpoint, "--json", "--batch-size", "4"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["videos"] == len(uploads) and summary["errors"] == len(bad_videos)

    files = s3fs_client.glob("videos/out/*.parquet")
    assert 1 <= len(files) <= 2  # sensible files, not one per row
    predictions = pq.read_table("videos/out", filesystem=_arrow_fs(s3fs_client))
    assert predictions.schema == PREDICTION_SCHEMA
    # DuckDB cannot reach S3 here (httpfs is a download); it reads the Arrow table pyarrow fetched.
    result = duckdb.sql("select * from predictions order by video_uri")
    rows = [dict(zip(result.columns, row)) for row in result.fetchall()]
    assert {r["video_uri"] for r in rows} == {f"s3://{key}" for key in uploads}
    assert len(rows) == len(uploads)  # one segment per short video, one row per bad video

    model, config = load_checkpoint(checkpoint)
    by_uri = {r["video_uri"]: r for r in rows}
    for key, source in uploads.items():
        row = by_uri[f"s3://{key}"]
        if "/bad/" in key:
            assert row["status"] == "error" and row["error"] and row["label"] is None
            assert row["embedding"] is None
            continue
        clip = sample_clip(source, num_frames=config.frames, size=(config.size, config.size))
        with torch.no_grad():
            logits, state = model.logits_and_embedding(clips_to_tensor(clip))
            probs = torch.softmax(logits, 1)[0].numpy()
        assert row["embedding"] == pytest.approx((state[0] / state[0].norm()).tolist(), abs=1e-5)
        assert row["status"] == "ok" and row["label"] == CLASSES[int(probs.argmax())]
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert row["top_scores"] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=1e-5)
        assert row["video_etag"] and row["video_bytes"] == source.stat().st_size
    assert "testing-secret" not in json.dumps([r for r in rows], default=str)


def test_long_video_becomes_consecutive_segments(ray_local, tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    write_testsrc(tmp_path / "in" / "long.mp4", seconds=75, size="64x48", fps=10)
    assert vidpipe(["classify", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                    str(checkpoint), "--window-seconds", "20"]) == 0
    rows = duckdb.sql(f"select segment, start_s, end_s, duration_s, status from "
                      f"read_parquet('{tmp_path}/out/*.parquet') order by segment").fetchall()
    assert rows == [(0, 0.0, 20.0, 75.0, "ok"), (1, 20.0, 40.0, 75.0, "ok"),
                    (2, 40.0, 60.0, 75.0, "ok"), (3, 60.0, 75.0, 75.0, "ok")]


def test_error_threshold_fails_the_job_after_writing(ray_local, bad_videos, tmp_path, checkpoint,
                                                     capsys):
    folder = next(iter(bad_videos.values())).parent
    code = vidpipe(["classify", str(folder), str(tmp_path / "out"), "--model", str(checkpoint)])
    assert code == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("vidpipe: error: ") and "could not be read" in last_line
    count = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/out/*.parquet') "
                       "where status = 'error' and error is not null").fetchall()[0][0]
    assert count == len(bad_videos)


def test_weights_that_do_not_load_fail_classify_and_scan_before_any_video(ray_local,
                                                                         motion_corpus, tmp_path):
    """The driver reads only the checkpoint's config; the weights first load in the workers'
    model check (infrastructure.check_model_on_nodes), which must still fail in one line, before
    any video is classified, and leave nothing behind."""
    from pipeline.model_config import FORMAT
    from vidpipe_calls import call_vidpipe

    config = ModelConfig("cnn3d_gru32", CLASSES, frames=12, size=48)
    weights = config.build().state_dict()
    weights.pop(next(iter(weights)))
    torch.save({"format": FORMAT, "config": config.to_dict(), "state_dict": weights},
               tmp_path / "model.pt")
    folder = motion_corpus / "MoveLeft"
    for command in (["classify", str(folder), str(tmp_path / "out")],
                    ["scan", str(folder), str(tmp_path / "scanned"), "--mlflow-uri",
                     f"sqlite:///{tmp_path / 'mlflow.db'}"]):
        code, _, err = call_vidpipe([*command, "--model", str(tmp_path / "model.pt")])
        assert code == 1, err
        assert err.strip().splitlines()[-1].startswith(
            "vidpipe: error: checkpoint weights do not fit its cnn3d_gru32 model (1 difference(s): "
            "missing "), err
        assert "Traceback" not in err and "classified" not in err
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "scanned").rglob("*.parquet"))  # a scan commits nothing


def test_classify_rerun_refuses_then_overwrite_replaces_its_rows(ray_local, motion_corpus,
                                                                 checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(motion_corpus / "MoveLeft", inputs)
    command = ["classify", str(inputs), str(tmp_path / "out"), "--model", str(checkpoint)]
    assert vidpipe(command) == 0
    before = sorted(path.name for path in (tmp_path / "out").glob("*.parquet"))
    assert "embedding" in pq.read_schema(tmp_path / "out" / before[0]).names
    capsys.readouterr()
    assert vidpipe(command) == 1  # never appended to silently
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "is not empty" in error and "--overwrite" in error
    assert sorted(path.name for path in (tmp_path / "out").glob("*.parquet")) == before
    assert vidpipe([*command, "--overwrite", "--no-embeddings"]) == 0
    after = sorted(path.name for path in (tmp_path / "out").glob("*.parquet"))
    assert after and not set(after) & set(before)
    assert "embedding" not in pq.read_schema(tmp_path / "out" / after[0]).names
    counts = duckdb.sql(f"select count(*), count(distinct video_uri) from "
                        f"read_parquet('{tmp_path}/out/*.parquet')").fetchall()[0]
    assert counts == (12, 12)
    assert not (tmp_path / "out" / "_staging").exists() or not any((tmp_path / "out" / "_staging").iterdir())


@pytest.mark.slow
def test_overwrite_never_shows_readers_old_and_new_rows_together(motion_corpus, checkpoint,
                                                                 tmp_path):
    """Paused right after the first new file is published (the faults hook), a reader's glob sees
    only the new run's rows: the old files went first."""
    import os
    import subprocess
    import sys

    inputs = tmp_path / "in"
    shutil.copytree(motion_corpus / "MoveLeft", inputs)
    vidpipe_bin = str(Path(sys.executable).parent / "vidpipe")
    command = [vidpipe_bin, "classify", str(inputs), str(tmp_path / "out"), "--model",
               str(checkpoint), "--num-actors", "1"]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    env = {**os.environ, "VIDPIPE_TEST_PAUSE_AT": "mid_publish", "VIDPIPE_TEST_PAUSE_S": "30"}
    env.pop("RAY_ADDRESS", None)
    rerun = subprocess.Popen([*command, "--overwrite"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in rerun.stderr:
            if "paused at mid_publish" in line:
                break
        rows = duckdb.sql(f"select count(*), count(distinct video_uri) "
                          f"from read_parquet('{tmp_path}/out/*.parquet')").fetchall()[0]
        assert rows[0] == rows[1] == 12  # one run's rows, each video once
    finally:
        rerun.kill()
        rerun.wait()


def _arrow_fs(fs):
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fs))


@pytest.mark.slow
def test_job_submitted_to_a_two_node_cluster_runs_on_both_nodes(ray_cluster, motion_corpus,
                                                                 checkpoint, tmp_path):
    output = tmp_path / "out"
    done = ray_cluster.submit(["jobs/batch_classify.py", str(motion_corpus), str(output),
                               "--model", str(checkpoint), "--num-actors", "2", "--json"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = last_json(done.stdout)
    assert summary["videos"] == 48 and summary["errors"] == 0
    assert len(summary["nodes"]) == 2  # decode tasks and actors ran on both nodes
    count = duckdb.sql(f"select count(*) from read_parquet('{output}/*.parquet')").fetchall()[0][0]
    assert count == 48


def test_classify_defaults_to_the_window_the_model_was_trained_on(ray_local, tmp_path):
    """A checkpoint records its training clip span: a longer video is cut into consecutive
    windows of that span unless told otherwise (--window-seconds 0: the whole video)."""
    untrained_checkpoint(tmp_path / "model.pt", CLASSES, seed=3, frames=12, size=48,
                         clip_seconds=2.5)
    (tmp_path / "in").mkdir()
    write_testsrc(tmp_path / "in" / "long.mp4", seconds=7, size="64x48", fps=10)
    for flags, out in (([], "default"), (["--window-seconds", "0"], "whole")):
        assert vidpipe(["classify", str(tmp_path / "in"), str(tmp_path / out), "--model",
                        str(tmp_path / "model.pt"), *flags]) == 0
    windows = duckdb.sql(f"select segment, start_s, end_s from read_parquet('{tmp_path}/default/"
                         f"*.parquet') order by segment").fetchall()
    assert windows == [(0, 0.0, 2.5), (1, 2.5, 5.0), (2, 5.0, 7.0)]
    whole = duckdb.sql(f"select segment, start_s, end_s from read_parquet('{tmp_path}/whole/"
                       f"*.parquet')").fetchall()
    assert whole == [(0, 0.0, 7.0)]


def test_tasks_and_actor_pool_give_the_same_rows(ray_local, motion_corpus, bad_videos, tmp_path,
                                                 checkpoint):
    """CPU clusters decode and classify in the same tasks; GPU clusters (and --num-actors) feed
    decode tasks to classifier actors. Both shapes write the same rows, error rows included."""
    inputs = tmp_path / "in"
    shutil.copytree(motion_corpus / "MoveDown", inputs / "good")
    shutil.copytree(next(iter(bad_videos.values())).parent, inputs / "bad")
    write_testsrc(inputs / "long.mp4", seconds=7, size="64x48", fps=10)
    columns = ["video_uri", "segment", "start_s", "end_s", "status", "error", "label", "score",
               "top_labels", "top_scores", "duration_s", "model_version", "embedding"]
    tables = {}
    for shape, flags in (("tasks", []), ("actors", ["--num-actors", "1"])):
        assert vidpipe(["classify", str(inputs), str(tmp_path / shape), "--model", str(checkpoint),
                        "--window-seconds", "2", "--batch-size", "3", *flags]) == 0
        tables[shape] = pq.read_table(tmp_path / shape).select(columns).sort_by(
            [("video_uri", "ascending"), ("segment", "ascending")]).to_pylist()
    assert len({row["video_uri"] for row in tables["tasks"]}) == 12 + len(bad_videos) + 1
    assert sum(row["video_uri"].endswith("long.mp4") for row in tables["tasks"]) == 4  # 2+2+2+1 s
    assert sum(row["status"] == "error" for row in tables["tasks"]) == len(bad_videos)
    for task_row, actor_row in zip(tables["tasks"], tables["actors"], strict=True):
        assert task_row["score"] == pytest.approx(actor_row["score"], abs=1e-5)
        assert task_row["top_scores"] == pytest.approx(actor_row["top_scores"], abs=1e-5)
        if task_row["status"] == "ok":
            assert task_row["embedding"] == pytest.approx(actor_row["embedding"], abs=1e-5)
        assert ({**task_row, "score": 0, "top_scores": 0, "embedding": 0}
                == {**actor_row, "score": 0, "top_scores": 0, "embedding": 0})


def test_classify_task_streams_windows_and_a_video_failing_halfway_is_one_error_row(
        ray_local, tmp_path, checkpoint, monkeypatch):
    """The CPU task classifies windows as they are decoded, a few at a time; the rows equal the
    all-at-once path's, and a video whose read fails after some windows is one error row."""
    import io

    import pyarrow as pa

    from pipeline import inference, segments, storage
    from pipeline.model_store import load_model

    good = [write_testsrc(tmp_path / f"good{i}.mp4", seconds=s, faststart=True)
            for i, s in enumerate((7, 2, 5))]
    broken = write_testsrc(tmp_path / "broken.mp4", seconds=10, faststart=True)
    data = broken.read_bytes()

    class Dropped(io.BytesIO):  # the store connection drops once 60% of the object was read
        def read(self, size=-1):
            if self.tell() > 0.6 * len(data):
                raise ConnectionResetError("connection reset by peer")
            return super().read(size)

    opened = segments.open_video
    monkeypatch.setattr(segments, "open_video",
                        lambda uri: Dropped(data) if uri.endswith("broken.mp4") else opened(uri))
    # Listed as a listing would (decoding checks the version it reads against the listed one).
    listed = [{"video_uri": str(path), "video_etag": storage.fingerprint(str(path)),
               "video_bytes": path.stat().st_size} for path in (good[0], broken, good[1], good[2])]
    loaded = load_model(str(checkpoint))
    tables = list(inference.classify_task(
        pa.Table.from_pylist(listed), ray_local.put(loaded.checkpoint), loaded.lineage,
        loaded.config.frames, loaded.config.size, 1.0, None, batch_size=3))
    rows = pa.concat_tables(tables).to_pylist()
    [error] = [row for row in rows if row["video_uri"].endswith("broken.mp4")]
    assert error["status"] == "error" and "ConnectionResetError" in error["error"] and error["retry"]
    classifier = inference.Classifier(loaded)
    expected = [row for path in good for row in classifier.rows(
        segments.decode_video({"video_uri": str(path), "video_etag": storage.fingerprint(str(path)),
                               "video_bytes": path.stat().st_size},
                              loaded.config.frames, loaded.config.size, 1.0))]
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == len(expected) == 7 + 2 + 5
    for got, want in zip(sorted(ok, key=lambda r: (r["video_uri"], r["segment"])),
                         sorted(expected, key=lambda r: (r["video_uri"], r["segment"]))):
        assert (got["video_uri"], got["segment"], got["start_s"], got["end_s"], got["label"]) == \
            (want["video_uri"], want["segment"], want["start_s"], want["end_s"], want["label"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
