"""`vidpipe scan`: incremental, exactly-once Parquet on a local folder and on S3 (moto on loopback),
crash-safe under SIGKILL, one scan at a time, and surviving a lost worker node of a real cluster.

Every exactly-once check reads the predictions the way the contract says a reader does:
DuckDB's read_parquet('OUTPUT/predictions/**/*.parquet', hive_partitioning=true) (for S3, on a
local mirror of the bucket's files, since DuckDB cannot reach S3 here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from checkpoints import MOTION_CLASSES, untrained_checkpoint
from fixtures.ray_cluster import JOB_EXCLUDES, last_json
from vidpipe_calls import run_vidpipe

from pipeline import commit, lease, segments, storage
from pipeline.rows import PREDICTION_SCHEMA, Lineage, error_row, rows_to_table
from pipeline import scan
from pipeline.scan import diff_uri_rows, state_rows, tvd
from pipeline.synthetic import make_corpus

ROOT = Path(__file__).resolve().parents[1]
CLASSES = MOTION_CLASSES
READER_GLOB = "predictions/**/*.parquet"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("scan-model") / "model.pt", CLASSES,
                                seed=5, frames=8, size=32)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, bad_videos) -> list[Path]:
    """Twelve small synthetic videos (distinct bytes) and one undecodable file, last."""
    root = tmp_path_factory.mktemp("scan-videos")
    make_corpus(str(root), per_class=3, groups=1, seed=21)
    return sorted(root.glob("*/*.mp4")) + [bad_videos["text"]]


def reader_rows(output: Path) -> list[dict]:
    """What a reader of the contract's glob sees (by column name: runs with and without
    embeddings write files with and without that column)."""
    if not list(output.glob(READER_GLOB)):
        return []
    result = duckdb.sql(f"select * from read_parquet('{output}/{READER_GLOB}', "
                        "hive_partitioning=true, union_by_name=true)")
    return [dict(zip(result.columns, row)) for row in result.fetchall()]


def assert_exactly_once(rows: list[dict]) -> None:
    keys = [(r["video_uri"], r["video_etag"], r["model_name"], r["model_version"], r["segment"])
            for r in rows]
    assert len(keys) == len(set(keys)), \
        "a (video_uri, video_etag, model_name, model_version, segment) twice"


def assert_complete(rows: list[dict]) -> None:
    """Every video's segments are 0..n-1 (an error video: its one row), none missing."""
    segments_of: dict = {}
    for row in rows:
        segments_of.setdefault((row["video_uri"], row["video_etag"]), []).append(row["segment"])
    for key, found in segments_of.items():
        assert sorted(found) == list(range(len(found))), f"{key} has segments {sorted(found)}"


def listed(archive: Path | str) -> set[tuple[str, str]]:
    """(uri, ETag) of every video under a folder or an S3 prefix, as a listing sees them."""
    return {(v.uri, v.etag) for v in storage.list_videos(str(archive))}


# --- pure parts: no Ray ---------------------------------------------------------------------------


def test_fingerprint_is_the_same_in_every_time_zone(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 1000)
    os.utime(video, (1_700_000_000.25, 1_700_000_000.25))
    script = "import sys; from pipeline.storage import fingerprint; print(fingerprint(sys.argv[1]))"
    prints = {}
    for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        done = subprocess.run([sys.executable, "-c", script, str(video)], capture_output=True,
                              text=True, check=True, cwd=ROOT,
                              env={**os.environ, "TZ": zone, "PYTHONPATH": str(ROOT)})
        prints[zone] = done.stdout.strip()
    assert prints["UTC"].startswith("fp-") and len(set(prints.values())) == 1, prints


def test_the_s3_endpoint_is_one_setting_that_ray_workers_receive(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(storage, "_endpoint_url", None)
    assert storage.endpoint_url() is None and storage.worker_env() == {}
    storage.configure(endpoint_url="http://minio.local:9000")
    fs, path = storage.filesystem("s3://bucket/key.mp4")
    assert fs.endpoint_url == "http://minio.local:9000" and path == "bucket/key.mp4"
    assert storage.worker_env() == {"AWS_ENDPOINT_URL": "http://minio.local:9000"}
    monkeypatch.setattr(storage, "_endpoint_url", None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-the-environment:9000")
    assert storage.worker_env() == {"AWS_ENDPOINT_URL": "http://from-the-environment:9000"}


def _state(uri, etag, status, run, model="v1", name=None):
    return {"video_uri": uri, "video_etag": etag, "video_bytes": 1, "model_name": name,
            "model_version": model, "status": status, "run_id": run}


def _listing(uri, etag):
    return {"video_uri": uri, "video_etag": etag, "video_bytes": 1, "model_name": None,
            "model_version": None, "status": None, "run_id": None}


def test_diff_decides_what_is_processed_recorded_or_left_alone():
    rows = [
        _listing("new", "a"),
        _listing("same", "a"), _state("same", "a", "ok", "r1"),
        _listing("bad", "a"), _state("bad", "a", "error", "r1"),  # undecodable: not retried
        _listing("over", "b"), _state("over", "a", "ok", "r1"),  # overwritten: new ETag
        _state("gone", "a", "ok", "r1"),  # deleted from the archive
        _state("gone-before", "a", "ok", "r1"), _state("gone-before", "a", "deleted", "r2"),
        _listing("back", "a"), _state("back", "a", "ok", "r1"), _state("back", "a", "deleted", "r2"),
        _listing("old-model", "a"), _state("old-model", "a", "ok", "r1", model="v0"),
    ]
    plan, unchanged = diff_uri_rows(rows, "v1", reprocess=False)
    changes = {row["video_uri"]: row["change"] for row in plan}
    assert changes == {"new": "new", "over": "changed", "gone": "deleted", "back": "restored"}
    assert unchanged == 3  # same, bad, old-model (done by another model version)
    plan, unchanged = diff_uri_rows(rows, "v1", reprocess=True)
    assert {row["video_uri"]: row["change"] for row in plan}["old-model"] == "reprocess"
    assert unchanged == 2
    assert tvd({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0
    assert tvd({"a": 1.0}, {"b": 1.0}) == 1
    assert tvd({"a": 0.75, "b": 0.25}, {"a": 0.25, "b": 0.75}) == pytest.approx(0.5)


def test_a_model_is_its_name_and_version_not_the_version_alone():
    """Registry versions count per name: models:/a/3 and models:/b@champion (version 3) are two
    models. State written before model_name was recorded (none) matches on the version alone."""
    rows = [
        _listing("by-a", "e"), _state("by-a", "e", "ok", "r1", model="3", name="a"),
        _listing("by-b", "e"), _state("by-b", "e", "ok", "r1", model="3", name="b"),
        _listing("by-old", "e"), _state("by-old", "e", "ok", "r1", model="3"),  # no model_name
    ]
    plan, unchanged = diff_uri_rows(rows, "3", reprocess=True, model_name="b")
    assert {row["video_uri"]: row["change"] for row in plan} == {"by-a": "reprocess"}
    assert unchanged == 2
    plan, unchanged = diff_uri_rows(rows, "3", reprocess=False, model_name="b")
    assert plan == [] and unchanged == 3  # without --reprocess-on-model-change: done is done
    # State rows carry the name of the rows they stand for.
    lineage = Lineage("b", "3")
    written = rows_to_table([error_row({"video_uri": "u", "video_etag": "e", "video_bytes": 1},
                                       "bad", lineage)])
    assert state_rows(written, "r2").to_pylist()[0]["model_name"] == "b"


def test_a_uri_split_across_blocks_is_diffed_as_one():
    """The diff of one partition split into blocks anywhere (Ray may hand a keyed partition on
    in several blocks) is the diff of the whole: per-block summaries of a URI merge."""
    rows = [
        _listing("back", "a"), _state("back", "a", "ok", "r1"), _state("back", "a", "deleted", "r2"),
        _listing("same", "a"), _state("same", "a", "ok", "r1"),
        _listing("over", "b"), _state("over", "a", "ok", "r1"),
        _state("gone", "a", "ok", "r1"), _state("gone", "a", "deleted", "r2"),
        _state("gone-now", "a", "ok", "r1"),
    ]
    whole = diff_uri_rows(rows, "v1", reprocess=False)
    assert {row["video_uri"]: row["change"] for row in whole[0]} == \
        {"back": "restored", "over": "changed", "gone-now": "deleted"} and whole[1] == 1
    for split in range(1, len(rows)):  # every cut, each side summarised alone, then merged
        for order in (rows, rows[::-1]):
            parts = [order[:split], order[split:]]
            summaries = {}
            for part in parts:
                for uri in {row["video_uri"] for row in part}:
                    mine = scan.summarize([r for r in part if r["video_uri"] == uri], None, "v1")
                    summaries[uri] = scan.merge_summaries(summaries.get(uri, mine), mine) \
                        if uri in summaries else mine
            decided = {uri: scan.decide(summary, reprocess=False)["change"]
                       for uri, summary in summaries.items()}
            assert decided == {"back": "restored", "same": "unchanged", "over": "changed",
                               "gone": "", "gone-now": "deleted"}, split


@pytest.mark.parametrize("partitions", [1, 2])  # one block, one task; the keyed aggregation
def test_the_plan_is_the_same_however_ray_splits_the_rows(ray_local, partitions):
    """The Ray Data step of the diff on rows in one-row blocks, with a tiny target block size:
    no URI is both new and deleted, every count as in the pure diff."""
    from ray.data import DataContext

    rows = [
        _listing("same", "a"), _state("same", "a", "ok", "r1", name="m"),
        _listing("new", "a"),
        _listing("old-model", "a"), _state("old-model", "a", "ok", "r1", model="v0"),
        _listing("other-name", "a"), _state("other-name", "a", "ok", "r1", name="other"),
        _state("gone", "a", "ok", "r1", name="m"),
    ]
    table = pa.Table.from_pylist(rows, schema=scan.STATE_SCHEMA)
    context = DataContext.get_current()
    saved = context.target_max_block_size
    context.target_max_block_size = 64  # bytes: every block Ray makes would be split
    try:
        blocks = [table.slice(i, 1) for i in range(table.num_rows)]
        plan = scan.diff_dataset(ray_local.data.from_arrow(blocks), "m", "v1", reprocess=True,
                                 partitions=partitions)
        counts = scan.count_changes(plan)
        planned = {row["video_uri"]: row["change"] for row in plan.take_all() if row["video_uri"]}
    finally:
        context.target_max_block_size = saved
    assert planned == {"new": "new", "old-model": "reprocess", "other-name": "reprocess",
                       "gone": "deleted"}
    assert (counts["unchanged"], counts["listed"]) == (1, 4)
    pure, unchanged = diff_uri_rows(rows, "v1", reprocess=True, model_name="m")
    assert {row["video_uri"]: row["change"] for row in pure} == planned and unchanged == 1


def test_state_written_before_model_name_still_plans(ray_local, tmp_path):
    """A _state file without model_name (older outputs) beside one with it: both read, the old
    rows match this model on the version alone."""
    import pyarrow.parquet as pq

    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("old.mp4", "new.mp4", "fresh.mp4"):
        (archive / name).write_bytes(name.encode())
    etag = {v.uri.rsplit("/", 1)[1]: v.etag for v in storage.list_videos(str(archive))}
    uri = f"file://{archive}"
    old = pa.table({"video_uri": [f"{uri}/old.mp4"], "video_etag": [etag["old.mp4"]],
                    "video_bytes": [7], "model_version": ["3"], "status": ["ok"],
                    "run_id": ["r1"]})
    new = pa.Table.from_pylist([_state(f"{uri}/new.mp4", etag["new.mp4"], "ok", "r2",
                                       model="3", name="a")], schema=scan.STATE_SCHEMA)
    pq.write_table(old, tmp_path / "old.parquet")
    pq.write_table(new, tmp_path / "new.parquet")
    files = [str(tmp_path / "new.parquet"), str(tmp_path / "old.parquet")]
    plan = scan.plan_dataset(str(archive), files, "3", True, 2, model_name="b")
    planned = {row["video_uri"]: row["change"] for row in plan.take_all() if row["video_uri"]}
    assert planned == {f"{uri}/new.mp4": "reprocess", f"{uri}/fresh.mp4": "new"}
    assert scan.count_changes(plan)["unchanged"] == 1  # old.mp4: done by version 3, name unknown


def test_a_first_scan_plans_every_listed_video_as_new_in_any_blocks(ray_local, tmp_path,
                                                                      monkeypatch):
    """No state yet: the listing's blocks are diffed one by one (no shuffle), here blocks of 2
    rows over two folders: each video planned once, as new."""
    for folder in ("a", "b"):
        (tmp_path / "archive" / folder).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "archive" / folder / f"{i}.mp4").write_bytes(f"{folder}{i}".encode())
    monkeypatch.setattr(storage, "LISTING_BLOCK_ROWS", 2)  # the listing's repartition, here
    plan = scan.plan_dataset(str(tmp_path / "archive"), [], "1", False, partitions=4)
    rows = [row for row in plan.take_all() if row["video_uri"]]
    assert sorted(row["video_uri"].split("/archive/")[1] for row in rows) == \
        [f"{folder}/{i}.mp4" for folder in "ab" for i in range(5)]
    assert {row["change"] for row in rows} == {"new"}
    counts = scan.count_changes(plan)
    assert counts["new"] == counts["listed"] == 10 and counts["unchanged"] == 0


def test_a_storage_failure_is_tried_again_next_night_not_recorded(tmp_path, monkeypatch):
    def unreachable(uri):
        raise ConnectionError("endpoint unreachable")

    video = {"video_uri": "s3://archive/a.mp4", "video_etag": "e1", "video_bytes": 10}
    monkeypatch.setattr(segments, "open_video", unreachable)
    [record] = segments.decode_video(video, 8, 32, None)
    assert record["retry"] and record["error"] == "cannot read input: ConnectionError"
    undecodable = segments.decode_video({**video, "video_uri": "s3://archive/b.mp4"}, 8, 32, None,
                                        data=b"not a video")
    assert not undecodable[0]["retry"]

    lineage = Lineage("m", "v1")
    batch = rows_to_table([error_row(r, r["error"], lineage) for r in [record, *undecodable]])
    batch = batch.append_column("retry", pa.array([True, False]))
    [manifest] = commit.write_staged(batch, str(tmp_path / "staging"), keep_retry=False,
                                     schema=PREDICTION_SCHEMA,
                                     state_rows=lambda rows: state_rows(rows, "r1")).to_pylist()
    assert (manifest["retry_videos"], manifest["error_videos"], manifest["rows"]) == (1, 1, 1)
    state = duckdb.sql(f"select video_uri, status from read_parquet('{manifest['state_file']}')").fetchall()
    assert state == [("s3://archive/b.mp4", "error")]  # the unreachable one has no state: new again
    plan, _ = diff_uri_rows([_listing("s3://archive/a.mp4", "e1")], "v1", reprocess=False)
    assert plan[0]["change"] == "new"


def test_a_video_overwritten_after_listing_gets_no_rows_under_the_old_etag(
        s3fs_client, videos, tmp_path):
    """Listed as one version, read as another (S3: the ETag s3fs opened; local: the size+mtime
    fingerprint of the file read): a retry record, never rows that claim the listed ETag."""
    bucket = f"changed-{tmp_path.name}".lower().replace("_", "-")[:60]
    s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/v.mp4", videos[0].read_bytes())
    local = tmp_path / "v.mp4"
    shutil.copyfile(videos[0], local)
    for uri in (f"s3://{bucket}/v.mp4", f"file://{local}"):
        [listed] = storage.list_videos(uri)
        video = {"video_uri": listed.uri, "video_etag": listed.etag, "video_bytes": listed.size}
        assert segments.decode_video(video, 8, 32, None)[0]["error"] is None  # as listed: fine
        if uri.startswith("s3://"):
            s3fs_client.pipe(f"{bucket}/v.mp4", videos[1].read_bytes())
        else:
            _place(tmp_path, "v.mp4", videos[1], mtime=time.time() + 5)
        assert storage.fingerprint(uri) != listed.etag
        records = segments.decode_video(video, 8, 32, None)
        assert [(r["video_etag"], r["error"], r["retry"]) for r in records] == \
            [(listed.etag, "cannot read input: changed since it was listed", True)], uri
        windows = segments.VideoWindows(video, 8, 32, None)
        assert list(windows) == [] and windows.records[0]["retry"]  # nothing decoded first


def test_listing_streams_disjoint_units_in_blocks(tmp_path):
    for folder in ("a", "b/c", "b/d"):
        (tmp_path / folder).mkdir(parents=True)
    for i in range(250):
        (tmp_path / "a" / f"{i:03d}.mp4").write_bytes(b"x")
    for name in ("top.mp4", "b/c/one.mkv", "b/d/two.MOV", "b/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    units = storage.listing_units(str(tmp_path), wanted=4)
    tables = [table for prefix, recursive in units
              for table in storage.list_prefix(prefix, recursive)]
    assert all(table.num_rows <= storage.LISTING_BLOCK_ROWS for table in tables)
    uris = [uri for table in tables for uri in table["video_uri"].to_pylist()]
    assert sorted(uris) == sorted(v.uri for v in storage.list_videos(str(tmp_path)))
    assert len(uris) == 253 and len(set(uris)) == 253


def test_the_plan_steps_import_no_torch():
    """The plan's Ray Data steps are functions of pipeline.scan, so every worker that runs one
    imports that module: it must not pull in torch (seconds per worker process, issue 20)."""
    done = subprocess.run([sys.executable, "-c", "import sys, pipeline.scan; "
                           "print(sorted({'torch', 'mlflow'} & set(sys.modules)))"],
                          capture_output=True, text=True, check=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "[]", done.stdout


# --- scans with the session's Ray ---------------------------------------------------------------


def _place(archive: Path, name: str, source: Path, mtime: float | None = None) -> None:
    target = archive / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    if mtime is not None:
        os.utime(target, (mtime, mtime))


@pytest.mark.slow
def test_incremental_scans_process_each_version_once(ray_local, videos, checkpoint, tmp_path):
    archive, output = tmp_path / "archive", tmp_path / "out"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for i, video in enumerate(videos[:6]):
        _place(archive, f"{'ab'[i % 2]}/v{i}.mp4", video)
    _place(archive, "broken.mp4", videos[-1])  # undecodable
    base = ["scan", str(archive), str(output), "--model", str(checkpoint), "--window-seconds", "1",
            "--mlflow-uri", mlflow_uri, "--rows-per-file", "10", "--json"]

    # The first scan without embeddings, as an output from before they existed; the third adds
    # files with them. Neither changes what the state settles.
    code, first, err = run_vidpipe(base + ["--date", "2026-11-30", "--no-embeddings"])
    assert code == 0, err[-3000:]
    assert (first["listed"], first["new"], first["processed"], first["errors"]) == (7, 7, 7, 1)
    assert (first["decoder"], first["decode_fallbacks"]) == ("pyav", 0)  # auto on CPUs: PyAV
    rows = reader_rows(output)
    assert {r["decoded_on"] for r in rows} == {"cpu"}
    assert_exactly_once(rows)
    assert_complete(rows)
    assert {(r["video_uri"], r["video_etag"]) for r in rows} == listed(archive)
    assert len(rows) == first["segments"] + 1 > 7  # windows of 1 s: several segments per video
    assert {str(r["scan_date"]) for r in rows} == {"2026-11-30"}
    assert sum(c["segments"] for c in first["classes"].values()) == first["segments"]

    code, second, err = run_vidpipe(base + ["--date", "2026-12-01"])
    assert code == 0, err[-3000:]
    assert (second["processed"], second["unchanged"], second["errors"]) == (0, 7, 0)
    assert second["files"] == [] and len(reader_rows(output)) == len(rows)  # no rows, no retry

    overwritten = archive / "a/v0.mp4"
    _place(archive, "a/v0.mp4", videos[6], mtime=time.time() + 5)
    _place(archive, "a/new1.mp4", videos[7])
    _place(archive, "c/new2.mp4", videos[8])
    (archive / "b/v1.mp4").unlink()
    code, third, err = run_vidpipe(base + ["--date", "2026-12-02"])
    assert code == 0, err[-3000:]
    assert {k: third[k] for k in ("new", "changed", "deleted", "processed", "unchanged")} == \
        {"new": 2, "changed": 1, "deleted": 1, "processed": 3, "unchanged": 5}
    rows = reader_rows(output)
    assert_exactly_once(rows)
    assert_complete(rows)
    latest = {r["video_uri"] for r in rows if str(r["scan_date"]) == "2026-12-02"}
    assert latest == {f"file://{archive}/{name}" for name in ("a/v0.mp4", "a/new1.mp4", "c/new2.mp4")}
    assert len({r["video_etag"] for r in rows if r["video_uri"] == f"file://{overwritten}"}) == 2
    for row in rows:  # embeddings: the third scan's ok rows, each of the GRU 32's width
        has_embedding = str(row["scan_date"]) == "2026-12-02" and row["status"] == "ok"
        assert (row["embedding"] is not None) == has_embedding
        assert not has_embedding or len(row["embedding"]) == 32
    assert listed(archive) <= {(r["video_uri"], r["video_etag"]) for r in rows}
    assert third["drift_tvd"] is not None and third["drift_against"] == first["run_id"]

    runs = sorted(p.name for p in (output / "_runs").iterdir())
    code, dry, err = run_vidpipe(base + ["--dry-run"])
    assert code == 0, err[-3000:]
    assert (dry["dry_run"], dry["unchanged"], dry["new"], dry["processed"]) == (True, 8, 0, 0)
    assert sorted(p.name for p in (output / "_runs").iterdir()) == runs  # a dry run writes nothing
    assert not (output / "_staging").exists() or not any((output / "_staging").iterdir())

    from mlflow import MlflowClient

    tracked = MlflowClient(tracking_uri=mlflow_uri).get_run(third["mlflow_run_id"])
    assert tracked.info.status == "FINISHED"
    assert tracked.data.metrics["processed"] == 3 and tracked.data.metrics["deleted"] == 1
    assert tracked.data.params["decoder"] == "pyav" and tracked.data.metrics["decode_fallbacks"] == 0
    assert tracked.data.params["model_version"] == third["model_version"]
    record = json.loads((output / "_runs" / f"{third['run_id']}.json").read_text())
    assert record["processed"] == 3 and record["videos_per_s"] > 0


def test_an_unreachable_mlflow_costs_no_scan_and_rows_name_the_checkpoint_hash(
        ray_local, videos, checkpoint, tmp_path):
    """Tracking is best effort: with MLflow down (a closed port, credentials in the URI) the scan
    commits its rows and its record, names the model by its checkpoint hash, and says once, with
    the URI redacted, what it could not track."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    archive, output = tmp_path / "archive", tmp_path / "out"
    for i, video in enumerate(videos[:3]):
        _place(archive, f"v{i}.mp4", video)
    digest = "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    code, record, err = run_vidpipe(["scan", str(archive), str(output), "--model", str(checkpoint),
                              "--mlflow-uri", f"http://scanuser:s3cr3t-pw@127.0.0.1:{port}",
                              "--json"])
    assert code == 0, err[-3000:]
    assert record["processed"] == 3 and record["mlflow_run_id"] is None
    assert record["model_version"] == digest
    rows = reader_rows(output)
    assert len(rows) >= 3 and {r["model_version"] for r in rows} == {digest}
    assert commit.committed_records(str(output))  # the run record is on OUTPUT regardless
    warnings = [line for line in err.splitlines() if "MLflow" in line]
    assert warnings and all(line.startswith("warning: ") for line in warnings), err[-2000:]
    assert "s3cr3t-pw" not in err and "s3cr3t-pw" not in json.dumps(record)


def test_mlflows_store_opens_in_a_thread_and_its_failures_are_left_to_the_run(tmp_path, capsys):
    """tracking.store_opening, which a scan enters once its lease is taken: the store exists
    once the wait returns; a store that cannot open prints nothing there (TrackedRun reports it)."""
    from pipeline.tracking import store_opening

    store = tmp_path / "mlflow.db"
    with store_opening(f"sqlite:///{store}") as opened:
        assert opened() == f"sqlite:///{store}"  # the URI the run then tracks into
        assert store.exists()
    capsys.readouterr()  # MLflow's own INFO lines on creating it (a vidpipe command sets WARNING)
    with store_opening("no-such-scheme://anywhere") as opened:
        opened()
    assert capsys.readouterr().err == ""


# --- killed scans: subprocesses in their own process group ------------------------------------


@pytest.fixture(scope="module")
def ray_address(ray_local) -> str:
    """The session's Ray, for scans run as separate driver processes: they join it as a nightly
    job's driver joins its cluster (starting a Ray of their own per run is slow, and can time out
    on a loaded 2-CPU machine)."""
    return ray_local.get_runtime_context().gcs_address


def start_scan(args: list[str], ray_address: str, pause_at: str | None = None,
               pause_s: float = 120) -> subprocess.Popen:
    """`vidpipe scan ...` as start_vidpipe starts it."""
    return start_vidpipe(["scan", *args], ray_address, pause_at, pause_s)


def start_vidpipe(args: list[str], ray_address: str, pause_at: str | None = None,
                  pause_s: float = 120) -> subprocess.Popen:
    """`vidpipe ARGS` as a driver process in a session of its own, joining the Ray at
    `ray_address` and stopping at `pause_at` (see pipeline/faults.py) so that the test can
    stop or kill it right there. Ray ends a dead driver's tasks and actors itself."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_address,
           "RAY_AUTH_MODE": "token"}
    if pause_at:
        env.update(VIDPIPE_TEST_PAUSE_AT=pause_at, VIDPIPE_TEST_PAUSE_S=str(pause_s))
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env,
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    return follow(process, process.stderr)


def follow(process: subprocess.Popen, stream) -> subprocess.Popen:
    """Collect `stream`'s lines in the background (process.seen), so that the test can wait for
    one without ever blocking the process on a full pipe."""
    process.seen, process.lines = [], queue.Queue()

    def pump():
        for line in stream:
            process.seen.append(line)
            process.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return process


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 300,
                  where=lambda line: True) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            line = process.lines.get(timeout=1)
            if text in line and where(line):
                return line
        except queue.Empty:
            if process.poll() is not None:
                break
    process.kill()
    raise AssertionError(f"never saw {text!r}; output ended with:\n{''.join(process.seen[-40:])}")


def session_pids(process: subprocess.Popen) -> list[int]:
    """Every process of the session `process` leads: itself, the Ray it started and that Ray's
    workers (which lead process groups of their own)."""
    found = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def kill_all(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started, at once (a lost machine, a killed pod)."""
    for pid in session_pids(process):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def mirror(s3fs_client, prefix: str, local: Path) -> Path:
    """A local copy of OUTPUT's objects, for DuckDB (whose S3 support cannot load here)."""
    s3fs_client.invalidate_cache()
    shutil.rmtree(local, ignore_errors=True)
    for key in s3fs_client.find(prefix):
        target = local / key[len(prefix) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3fs_client.cat_file(key))
    return local


@pytest.mark.slow
def test_killed_scans_then_a_rerun_leave_every_row_exactly_once_on_s3_one_scan_at_a_time(
        ray_address, s3_endpoint, s3fs_client, videos, checkpoint, tmp_path):
    bucket = f"scan-{int(time.time())}"
    s3fs_client.mkdir(bucket)
    for i, video in enumerate(videos[:6]):
        s3fs_client.pipe(f"{bucket}/archive/{'xy'[i % 2]}/v{i}.mp4", video.read_bytes())
    s3fs_client.pipe(f"{bucket}/archive/broken.mp4", videos[-1].read_bytes())
    archive, output = f"s3://{bucket}/archive", f"s3://{bucket}/out"
    args = [archive, output, "--model", str(checkpoint), "--window-seconds", "1",
            "--rows-per-file", "6", "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--s3-endpoint-url", s3_endpoint]

    # Killed while decoding, then while writing staged files: nothing reaches the reader's glob.
    # Each killed run leaves its lease behind (unexpired for 300 s); the next run is not blocked.
    for moment in ("decoding", "writing"):
        scan = start_scan(args, ray_address, pause_at=moment)
        wait_for_line(scan, f"paused at {moment}")
        if moment == "decoding":  # meanwhile, a second scan of the same OUTPUT is refused
            code, _, err = run_vidpipe(["scan", *args])
            assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
            assert err.startswith("vidpipe: error: ") and "is being written by run" in err
        kill_all(scan)
        s3fs_client.invalidate_cache()
        assert not s3fs_client.glob(f"{bucket}/out/predictions/**"), moment
        assert s3fs_client.glob(f"{bucket}/out/_staging/*"), moment  # left for the next run

    # Killed between data and commit: its intent is written, one file published, no record.
    scan = start_scan(args, ray_address, pause_at="mid_publish")
    wait_for_line(scan, "paused at mid_publish")
    kill_all(scan)
    s3fs_client.invalidate_cache()
    runs = s3fs_client.ls(f"{bucket}/out/_runs")
    assert [name for name in runs if name.endswith(".intent.json")] and \
        not [name for name in runs if name.endswith(".json") and ".intent" not in name]
    crashed = reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "seen-while-crashed"))
    assert crashed, "one published file of the crashed run is visible"
    assert_exactly_once(crashed)  # a subset: rows missing, none twice

    # The next night: one more video; the run finishes the crashed one and processes only the new.
    s3fs_client.pipe(f"{bucket}/archive/y/late.mp4", videos[7].read_bytes())
    code, record, err = run_vidpipe(["scan", *args, "--json"])
    assert code == 0, err[-3000:]
    assert len(record["recovered"]) == 1 and record["new"] == 1 and record["processed"] == 1
    rows = reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "after"))
    assert_exactly_once(rows)
    assert_complete(rows)
    assert {(r["video_uri"], r["video_etag"]) for r in rows} == \
        {(v.uri, v.etag) for v in storage.list_videos(archive)}
    s3fs_client.invalidate_cache()
    assert not s3fs_client.glob(f"{bucket}/out/_staging/*")
    records = commit.committed_records(output)
    assert len(records) == 2 and records[0]["recovered_by"] == record["run_id"]
    assert storage.read_json(f"{output}/{lease.LEASE_FILE}")["released"]


@pytest.mark.slow
def test_a_video_overwritten_while_a_scan_runs_is_classified_once_as_its_new_version(
        ray_address, s3_endpoint, s3fs_client, videos, checkpoint, tmp_path):
    """Overwritten on S3 after the scan listed it and before its decode task read it: that scan
    leaves it no row and no state (a retry), and the next scan classifies the new version, once."""
    bucket = f"overwrite-{int(time.time())}"
    s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/archive/keep.mp4", videos[0].read_bytes())
    s3fs_client.pipe(f"{bucket}/archive/over.mp4", videos[1].read_bytes())
    archive, output = f"s3://{bucket}/archive", f"s3://{bucket}/out"
    over = f"{archive}/over.mp4"
    old_etag = storage.fingerprint(over)
    args = [archive, output, "--model", str(checkpoint), "--window-seconds", "1",
            "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--s3-endpoint-url", s3_endpoint]

    scan = start_scan(args, ray_address, pause_at="decoding", pause_s=20)
    wait_for_line(scan, "paused at decoding")  # listed and planned; nothing read yet
    s3fs_client.pipe(f"{bucket}/archive/over.mp4", videos[2].read_bytes())
    assert scan.wait(timeout=600) == 0, "".join(scan.seen[-40:])
    [first] = commit.committed_records(output)
    assert (first["new"], first["processed"], first["retry"]) == (2, 1, 1)
    rows = reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "first"))
    assert {r["video_uri"] for r in rows} == {f"{archive}/keep.mp4"}  # nothing under old_etag

    code, second, err = run_vidpipe(["scan", *args, "--json"])
    assert code == 0, err[-3000:]
    assert (second["new"], second["processed"], second["unchanged"]) == (1, 1, 1)
    rows = reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "second"))
    assert_exactly_once(rows)
    assert_complete(rows)
    new_etag = storage.fingerprint(over)
    assert {r["video_etag"] for r in rows if r["video_uri"] == over} == {new_etag} != {old_etag}


@pytest.mark.slow
def test_a_worker_node_killed_mid_scan_costs_no_video(ray_cluster, videos, checkpoint, tmp_path):
    archive, output = tmp_path / "archive", tmp_path / "out"
    for i in range(24):
        _place(archive, f"{'pqr'[i % 3]}/v{i}.mp4", videos[i % 12])
    ray = str(Path(sys.executable).parent / "ray")
    gcs = f"127.0.0.1:{ray_cluster.env['VIDPIPE_GCS_PORT']}"
    # A third node, in a session of its own so that it can be killed whole, and with a temp dir of
    # its own as cluster/local/start.sh gives each node (see there why).
    cluster_temp = ray_cluster.env.get("VIDPIPE_RAY_TEMP",
                                       f"/tmp/vidpipe-ray-{ray_cluster.env['VIDPIPE_GCS_PORT']}")
    temp_dir = f"{cluster_temp}/node-3"
    node = subprocess.Popen([ray, "start", "--address", gcs, "--node-ip-address", "127.0.0.1",
                             "--num-cpus", "2", "--temp-dir", temp_dir, "--block",
                             "--disable-usage-stats"],
                            env=ray_cluster.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # The scan spreads its 24 videos over the CPUs it sees when it starts; the third node must be
    # one of them.
    wait_for_nodes(ray_cluster.env, gcs, 3)
    # Ray's log deduplication in the job's driver would fold the pause lines of tasks that pause
    # together into one "[repeated Nx across cluster]" line under another node's pid.
    pause = {"VIDPIPE_TEST_PAUSE_AT": "decoding", "VIDPIPE_TEST_PAUSE_S": "8",
             "RAY_DEDUP_LOGS": "0"}
    job = subprocess.Popen(
        [ray, "job", "submit", "--address", ray_cluster.dashboard, "--working-dir", str(ROOT),
         "--runtime-env-json", json.dumps({"excludes": JOB_EXCLUDES, "env_vars": pause}),
         "--", sys.executable, "jobs/nightly_scan.py", str(archive), str(output), "--model",
         str(checkpoint), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"],
        env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    follow(job, job.stdout)

    def on_that_node(line: str) -> bool:  # Ray prefixes a worker's forwarded output with its pid
        match = re.search(r"pid=(\d+)", line)
        return bool(match) and int(match[1]) in session_pids(node)

    try:
        # Killed while one of its workers is in the middle of decoding.
        wait_for_line(job, "paused at decoding", timeout=600, where=on_that_node)
        kill_all(node)
        assert job.wait(timeout=900) == 0, "".join(job.seen[-60:])
    finally:
        if node.poll() is None:
            kill_all(node)
        if job.poll() is None:
            job.kill()
    time.sleep(0.5)  # the pump thread has read everything once the process has exited
    record = last_json("".join(job.seen))
    assert record["listed"] == record["new"] == record["processed"] == 24
    assert record["retry"] == 0 and record["errors"] == 0
    assert len(record["nodes"]) == 3  # the killed node had work too
    rows = reader_rows(output)
    assert_exactly_once(rows)
    assert_complete(rows)
    assert {(r["video_uri"], r["video_etag"]) for r in rows} == listed(archive)


def wait_for_nodes(env: dict, gcs: str, count: int, timeout: float = 300) -> None:
    """Until the cluster at `gcs` has `count` live nodes (`ray start --block` returns nothing)."""
    script = ("import sys, time, ray\n"
              "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
              "deadline = time.time() + float(sys.argv[3])\n"
              "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]):\n"
              "    assert time.time() < deadline, ray.nodes()\n"
              "    time.sleep(1)\n")
    subprocess.run([sys.executable, "-c", script, gcs, str(count), str(timeout)], env=env,
                   check=True, capture_output=True, timeout=timeout + 60)


def test_scan_usage_errors_are_one_line(ray_local, checkpoint, tmp_path):
    code, _, err = run_vidpipe(["scan", str(tmp_path), str(tmp_path / "out"), "--model", str(checkpoint),
                         "--date", "2026-13-01"])
    assert code == 2 and "not a date" in err and err.count("\n") == 1
    code, _, err = run_vidpipe(["scan", str(tmp_path / "missing"), str(tmp_path / "out"), "--model",
                         str(checkpoint), "--dry-run"])
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("vidpipe: error: ARCHIVE ") and "does not exist" in err
