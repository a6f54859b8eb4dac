"""Classification without Ray: the sequential loop (rows in the DESIGN.md schema, error rows,
lineage, embeddings, DuckDB-readable) and one video decoded window by window
(segments.VideoWindows)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import torch
from checkpoints import MOTION_CLASSES, untrained_checkpoint
from videos import write_testsrc

from pipeline.frames import sample_clip
from pipeline.inference import VIDEOS_PER_CLASSIFY_TASK, classify_sequential, videos_per_task
from pipeline.models import clips_to_tensor
from pipeline.models.checkpoint import load_checkpoint
from pipeline.rows import PREDICTION_SCHEMA, prediction_schema


def test_sequential_classify_writes_schema_rows_and_error_rows(motion_corpus, bad_videos, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(motion_corpus / "MoveLeft", inputs / "good")
    shutil.copytree(next(iter(bad_videos.values())).parent, inputs / "bad")
    untrained_checkpoint(tmp_path / "model.pt", MOTION_CLASSES)

    summary = classify_sequential(str(inputs), str(tmp_path / "out" / "p.parquet"),
                                  str(tmp_path / "model.pt"))
    table = pq.read_table(tmp_path / "out" / "p.parquet")
    assert table.schema == PREDICTION_SCHEMA
    assert summary["videos"] == 12 + len(bad_videos) and summary["errors"] == len(bad_videos)

    rows = {Path(r["video_uri"]).name: r for r in table.to_pylist()}
    for kind in bad_videos:
        row = rows[f"{kind}.mp4"]
        assert row["status"] == "error" and row["error"] and row["label"] is None
        assert row["embedding"] is None
    model, _ = load_checkpoint(tmp_path / "model.pt")
    good = sorted((inputs / "good").iterdir())
    with torch.no_grad():
        logits, states = model.logits_and_embedding(
            clips_to_tensor(np.stack([sample_clip(p) for p in good])))
        expected = torch.softmax(logits, 1)
    for path, probs, state in zip(good, expected.numpy(), states.numpy()):
        row = rows[path.name]
        assert np.allclose(row["embedding"], state / np.linalg.norm(state), atol=1e-5)
        assert row["status"] == "ok" and row["error"] is None and row["segment"] == 0
        assert row["label"] == MOTION_CLASSES[int(probs.argmax())]
        assert np.isclose(row["score"], probs.max(), atol=1e-5)
        assert row["top_labels"][0] == row["label"] and len(row["top_scores"]) == 4
        assert row["model_name"] == "cnn3d_gru32" and row["model_version"].startswith("sha256:")
        assert row["video_etag"] and row["video_bytes"] == path.stat().st_size
        assert row["width"] > 0 and row["fps"] > 0 and row["end_s"] == row["duration_s"]

    counts = duckdb.sql(f"select status, count(*) from read_parquet('{tmp_path}/out/*.parquet') "
                        "group by 1 order by 1").fetchall()
    assert counts == [("error", len(bad_videos)), ("ok", 12)]
    # One width per model (the GRU 32's last state), which DuckDB can cast to FLOAT[32]
    widths = duckdb.sql(f"select distinct len(embedding::FLOAT[32]) from "
                        f"read_parquet('{tmp_path}/out/*.parquet') where status = 'ok'").fetchall()
    assert widths == [(32,)]


def test_both_decoders_give_the_same_rows(motion_corpus, bad_videos, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(motion_corpus / "MoveUp", inputs / "good")
    shutil.copytree(next(iter(bad_videos.values())).parent, inputs / "bad")
    untrained_checkpoint(tmp_path / "model.pt", MOTION_CLASSES)
    tables = {}
    for decoder in ("pyav", "ffmpeg"):
        classify_sequential(str(inputs), str(tmp_path / f"{decoder}.parquet"),
                            str(tmp_path / "model.pt"), window_seconds=0.5, decoder=decoder,
                            embeddings=decoder == "pyav")
        tables[decoder] = pq.read_table(tmp_path / f"{decoder}.parquet").sort_by(
            [("video_uri", "ascending"), ("segment", "ascending")])
    assert tables["pyav"].num_rows > 12  # windows: several clips per video
    columns = ["video_uri", "segment", "start_s", "end_s", "status", "error", "label", "score",
               "top_scores"]
    assert tables["pyav"].select(columns).to_pylist() == tables["ffmpeg"].select(columns).to_pylist()
    # Without embeddings (--no-embeddings) the column is left out, and nothing else changes.
    assert tables["ffmpeg"].schema == prediction_schema(embeddings=False)
    assert tables["pyav"].schema == PREDICTION_SCHEMA


class _DroppedAfter(io.BytesIO):
    """An object whose store connection drops once 60% of it has been read."""

    def read(self, size=-1):
        if self.tell() > 0.6 * len(self.getbuffer()):
            raise ConnectionResetError("connection reset by peer")
        return super().read(size)


def test_a_video_failing_halfway_is_one_error_record_after_its_first_windows(tmp_path, monkeypatch):
    from pipeline import segments

    data = write_testsrc(tmp_path / "v.mp4", seconds=10, faststart=True).read_bytes()
    monkeypatch.setattr(segments, "open_video", lambda uri: _DroppedAfter(data))
    listed = {"video_uri": "s3://bucket/v.mp4", "video_etag": "abc", "video_bytes": len(data)}
    windows = segments.VideoWindows(listed, 4, 32, 1.0)
    streamed = [window["segment"] for window, _ in windows]
    assert streamed[:3] == [0, 1, 2]  # windows came out before the connection dropped...
    [record] = windows.records  # ...and the video is still exactly one error record
    assert record["error"] == "cannot read input: ConnectionResetError" and record["retry"]
    assert segments.decode_video(listed, 4, 32, 1.0) == [record]


def test_the_decode_step_hands_a_long_video_on_in_tables_once_it_decoded_whole(tmp_path,
                                                                            monkeypatch):
    """The GPU shape's decode step (segments.decode_batch): a long video's clips wait in a spooled
    file (here all on disk) and leave in tables of a few windows, equal to decode_video's records;
    peak memory stays near one table, and a video failing halfway is one error record."""
    import tracemalloc

    import pyarrow as pa

    from pipeline import segments, storage

    monkeypatch.setattr(segments, "SPILL_BYTES", 1)  # 0 would mean "never spill"
    monkeypatch.setattr(segments, "WINDOWS_PER_TABLE", 4)
    long = write_testsrc(tmp_path / "long.mp4", seconds=60, size="160x120", faststart=True)
    listed = [{"video_uri": str(long), "video_etag": storage.fingerprint(str(long)),
               "video_bytes": long.stat().st_size}]
    expected = segments.decode_video(listed[0], 20, 64, 1.0)
    assert len(expected) == 60
    segments.records_to_table(expected[:1]).to_pylist()  # Arrow's lazy imports, before measuring
    tracemalloc.start()
    tables = []
    for table in segments.decode_batch(pa.Table.from_pylist(listed), 20, 64, 1.0):
        tables.append(table.drop_columns(["clip"]).num_rows)
        assert table.to_pylist() == expected[sum(tables) - table.num_rows:sum(tables)]
        del table
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert tables == [4] * 15
    assert peak < 20 * 20 * 64 * 64 * 3, peak  # a few tables' clips, not the video's 60

    data = write_testsrc(tmp_path / "v.mp4", seconds=10, faststart=True).read_bytes()
    monkeypatch.setattr(segments, "open_video", lambda uri: _DroppedAfter(data))
    broken = {"video_uri": "s3://bucket/v.mp4", "video_etag": "b", "video_bytes": len(data)}
    [table] = list(segments.decode_batch(pa.Table.from_pylist([broken]), 4, 32, 1.0))
    [record] = table.to_pylist()
    assert record["error"] == "cannot read input: ConnectionResetError" and record["retry"]


def test_a_small_known_job_is_spread_over_every_cpu():
    assert videos_per_task(24, 4) == 6  # four tasks, one per CPU, not 16 + 8 on two CPUs
    assert videos_per_task(3, 4) == 1
    assert videos_per_task(10_000, 4) == videos_per_task(None, 4) == VIDEOS_PER_CLASSIFY_TASK
    assert videos_per_task(5, 0) == 5  # a cluster reporting no CPU yet counts as one
