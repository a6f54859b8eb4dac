"""Exactly once against an adversary: the lease and the commit path of classify and scan (lease.py,
commit.py) with real parts: local folders, moto on loopback (directly, and through a proxy that
strips conditional-write headers or refuses every read), and vidpipe drivers as separate processes
joined to the session's Ray, paused at the faults hook, stopped (SIGSTOP: a VM pause, a long GC)
and killed.

After each scenario DuckDB reads every key exactly once, or the run failed loudly with nothing lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from checkpoints import MOTION_CLASSES, untrained_checkpoint
from test_scan import (assert_complete, assert_exactly_once, kill_all, listed, mirror,
                       reader_rows, start_vidpipe, wait_for_line)
from vidpipe_calls import run_vidpipe

from pipeline import commit, lease, storage
from pipeline.synthetic import make_corpus

CLASSES = MOTION_CLASSES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("once-model") / "model.pt", CLASSES,
                                seed=7, frames=8, size=32)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Eight small videos in two folders."""
    root = tmp_path_factory.mktemp("once-archive")
    make_corpus(str(root), classes=("MoveLeft", "MoveRight"), per_class=4, groups=1, seed=31)
    return root


@pytest.fixture(scope="module")
def ray_address(ray_local) -> str:
    return ray_local.get_runtime_context().gcs_address


def finished(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    code = process.wait(timeout=timeout)
    time.sleep(0.3)  # the pump thread has read everything once the process has exited
    return code, "".join(process.seen)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vidpipe: error: ")]


def classify_rows(output: Path) -> list[dict]:
    result = duckdb.sql(f"select * from read_parquet('{output}/*.parquet')")
    return [dict(zip(result.columns, row)) for row in result.fetchall()]


@pytest.fixture(params=["local", "s3"])
def lease_output(request, tmp_path, s3fs_client):
    if request.param == "local":
        return str(tmp_path / "out")
    if not s3fs_client.exists("leases"):
        s3fs_client.mkdir("leases")
    return f"s3://leases/{tmp_path.name}"


# --- the lease ----------------------------------------------------------------------------------


def test_one_lease_at_a_time_and_a_stale_one_is_taken_over(lease_output):
    first = lease.Lease(lease_output, "run-1", seconds=2)
    first.acquire()
    with pytest.raises(lease.LeaseHeld, match="is being written by run run-1 .* try again later"):
        lease.Lease(lease_output, "run-2", seconds=60).acquire()
    first.renew()

    # A holder on another host that stopped renewing: stale once the store's clock says its
    # duration passed since its last write.
    uri = storage.join(lease_output, lease.LEASE_FILE)
    storage.write_json(uri, {**storage.read_json(uri), "host": "elsewhere"})
    with pytest.raises(lease.LeaseHeld):
        lease.Lease(lease_output, "run-2", seconds=60).acquire()
    time.sleep(3.5)
    second = lease.Lease(lease_output, "run-2", seconds=60)
    second.acquire()
    assert second.generation == first.generation + 1
    with pytest.raises(lease.LeaseLost):  # the old holder learns it lost the lease
        first.renew()
    with pytest.raises(lease.LeaseLost):  # and cannot reach the commit point
        first.accept("run-1")

    # A holder on this host whose process is gone: stale at once.
    storage.write_json(uri, {**storage.read_json(uri), "pid": 2 ** 22 + 7})
    third = lease.Lease(lease_output, "run-3", seconds=60)
    third.acquire()
    third.release()
    assert storage.read_json(uri)["released"]
    fourth = lease.Lease(lease_output, "run-4", seconds=60)
    fourth.acquire()  # released: free
    assert fourth.generation == third.generation + 1
    fourth.release()


def test_a_contender_whose_clock_runs_ahead_does_not_take_a_live_lease(lease_output, monkeypatch):
    """Expiry is judged on the store's clock: a host whose clock is an hour ahead (or a holder's
    an hour behind) sees a live lease as live."""
    holder = lease.Lease(lease_output, "run-1", seconds=60)
    holder.acquire()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    with pytest.raises(lease.LeaseHeld):
        lease.Lease(lease_output, "run-2", seconds=60).acquire()
    monkeypatch.setattr(time, "time", real)
    holder.accept("run-1")  # still the holder
    holder.release()


def test_only_a_refused_condition_reads_as_a_lost_lease():
    """s3fs maps 412 PreconditionFailed and a 400 InvalidArgument alike to EINVAL; only the first
    means another writer moved the lease (a bad request must fail loudly, not look like a loss)."""
    import errno

    from botocore.exceptions import ClientError

    def translated(code: str, status: int) -> OSError:
        error = OSError(errno.EINVAL, code)
        error.__cause__ = ClientError({"Error": {"Code": code, "Message": code},
                                       "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
        return error

    assert lease._precondition_failed(translated("PreconditionFailed", 412))
    assert lease._precondition_failed(translated("ConditionalRequestConflict", 409))
    assert not lease._precondition_failed(translated("InvalidArgument", 400))
    assert not lease._precondition_failed(OSError(errno.EINVAL, "no cause"))


def test_a_store_that_ignores_conditional_writes_is_refused(s3_proxy, s3fs_client, ray_local,
                                                            checkpoint, archive, tmp_path):
    """An S3-compatible endpoint that drops If-None-Match / If-Match would let two writers both
    hold the lease: it is probed and refused with one line naming it."""
    s3fs_client.mkdir("ignores-conditions")
    s3_proxy.rules.strip_conditions = True
    output = "s3://ignores-conditions/out"
    storage.configure(endpoint_url=s3_proxy.url)
    try:
        with pytest.raises(lease.LeaseUnsupported, match=f"{s3_proxy.url} ignores conditional"):
            lease.Lease(output, "run-1").acquire()
    finally:
        storage.configure(endpoint_url=None)
    code, _, err = run_vidpipe(["scan", str(archive), output, "--model", str(checkpoint),
                         "--s3-endpoint-url", s3_proxy.url])
    storage.configure(endpoint_url=None)
    assert code == 1 and len(error_lines(err)) == 1 and "Traceback" not in err, err[-2000:]
    assert "ignores conditional writes" in error_lines(err)[0]
    s3fs_client.invalidate_cache()
    assert not s3fs_client.glob("ignores-conditions/out/**/*.parquet")


# --- runs as separate processes -------------------------------------------------------------------


@pytest.mark.slow
def test_two_scans_started_at_once_commit_once(ray_address, s3_endpoint, s3fs_client, archive,
                                               checkpoint, tmp_path):
    bucket = f"twice-{int(time.time())}"
    s3fs_client.mkdir(bucket)
    for video in sorted(archive.glob("*/*.mp4")):
        s3fs_client.pipe(f"{bucket}/archive/{video.parent.name}/{video.name}", video.read_bytes())
    source, output = f"s3://{bucket}/archive", f"s3://{bucket}/out"
    args = ["scan", source, output, "--model", str(checkpoint), "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--s3-endpoint-url", s3_endpoint]
    scans = [start_vidpipe(args, ray_address) for _ in range(2)]
    outcomes = sorted(finished(scan) for scan in scans)
    (won, _), (refused, err) = outcomes
    assert (won, refused) == (0, 1), outcomes
    assert len(error_lines(err)) == 1 and "is being written by run" in err, err[-2000:]
    rows = reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "seen"))
    assert_exactly_once(rows)
    assert {(r["video_uri"], r["video_etag"]) for r in rows} == listed(source)
    assert len(commit.committed_records(output)) == 1


@pytest.mark.slow
def test_a_writer_stalled_past_its_lease_commits_nothing_and_wedges_nothing(
        ray_address, archive, checkpoint, tmp_path):
    """Scan A has staged everything and stops (SIGSTOP) just before its intent; its lease runs out;
    scan B takes over and commits every video; A resumes: it fails loudly at the commit point,
    publishes nothing, and the next scan runs normally."""
    output = tmp_path / "out"
    args = ["scan", str(archive), str(output), "--model", str(checkpoint), "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"]
    stalled = start_vidpipe([*args, "--lease-seconds", "3"], ray_address,
                            pause_at="before_intent", pause_s=3)
    wait_for_line(stalled, "paused at before_intent")
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        time.sleep(5)  # past A's lease, by the store's clock
        code, taken_over, err = run_vidpipe(args)
        assert code == 0, err[-3000:]
        assert taken_over["processed"] == taken_over["listed"] == 8
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    code, err = finished(stalled)
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert "lease" in error_lines(err)[-1] and "committed nothing" in error_lines(err)[-1]
    rows = reader_rows(output)
    assert_exactly_once(rows)
    assert_complete(rows)
    assert {(r["video_uri"], r["video_etag"]) for r in rows} == listed(archive)
    assert not list((output / "_runs").glob("*.intent.json"))

    code, after, err = run_vidpipe(args)  # not wedged
    assert code == 0 and after["unchanged"] == 8 and after["processed"] == 0, err[-3000:]


@pytest.mark.slow
def test_a_scan_whose_every_read_is_refused_exits_1_and_the_next_one_reads_them(
        ray_address, s3_endpoint, s3_proxy, s3fs_client, archive, checkpoint, tmp_path):
    """Listing works, every GetObject/HeadObject of a video answers 403 (a bucket policy or KMS
    change): the scan counts them as storage failures, exits 1, and leaves them for the next."""
    bucket = f"denied-{int(time.time())}"
    s3fs_client.mkdir(bucket)
    for video in sorted(archive.glob("*/*.mp4")):
        s3fs_client.pipe(f"{bucket}/archive/{video.parent.name}/{video.name}", video.read_bytes())
    source, output = f"s3://{bucket}/archive", f"s3://{bucket}/out"
    s3_proxy.rules.deny_reads_under = f"/{bucket}/archive/"
    args = ["scan", source, output, "--model", str(checkpoint), "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}"]
    code, err = finished(start_vidpipe([*args, "--s3-endpoint-url", s3_proxy.url], ray_address))
    assert code == 1 and len(error_lines(err)) == 1 and "Traceback" not in err, err[-3000:]
    assert "8 of 8 videos could not be read" in err
    assert s3_proxy.traffic.denied  # the reads really were refused
    [record] = commit.committed_records(output)
    assert (record["planned"], record["processed"], record["retry"]) == (8, 0, 8)
    assert not reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "denied"))

    code, second, err = run_vidpipe([*args, "--s3-endpoint-url", s3_endpoint, "--json"])
    assert code == 0, err[-3000:]
    assert (second["new"], second["processed"], second["retry"]) == (8, 8, 0)
    rows = reader_rows(mirror(s3fs_client, f"{bucket}/out", tmp_path / "after"))
    assert_exactly_once(rows)
    assert {(r["video_uri"], r["video_etag"]) for r in rows} == listed(source)


@pytest.mark.slow
def test_an_intent_whose_staging_was_deleted_rolls_back_and_restores_what_it_replaced(
        ray_address, archive, checkpoint, tmp_path):
    """classify --overwrite killed halfway through publishing, then its staging deleted (by hand,
    or a lifecycle rule): the next run rolls it back, bringing back the rows it had replaced,
    instead of failing on it forever."""
    output = tmp_path / "out"
    args = ["classify", str(archive), str(output), "--model", str(checkpoint), "--overwrite",
            "--rows-per-file", "4"]  # several files, so that a run can be caught halfway
    code, _, err = run_vidpipe(args)
    assert code == 0, err[-3000:]
    before = sorted((r["video_uri"], r["segment"], r["processed_at"]) for r in classify_rows(output))

    crashed = start_vidpipe(args, ray_address, pause_at="mid_publish")
    wait_for_line(crashed, "paused at mid_publish")
    kill_all(crashed)
    shutil.rmtree(output / "_staging")
    assert len({r["video_uri"] for r in classify_rows(output)}) < 8  # old rows gone, new ones not all there

    with commit.OutputWriter(str(output), "recovering-run"):  # take the lease, recover, release
        pass
    restored = sorted((r["video_uri"], r["segment"], r["processed_at"]) for r in classify_rows(output))
    assert restored == before
    assert not list((output / "_runs").glob("*.intent.json"))
    assert not (output / "_replaced").exists() or not any((output / "_replaced").iterdir())

    code, _, err = run_vidpipe(args)
    assert code == 0, err[-3000:]
    rows = classify_rows(output)
    assert len(rows) == len(before) and len({r["video_uri"] for r in rows}) == 8


@pytest.mark.slow
def test_two_classify_overwrite_runs_at_once_leave_each_video_once(ray_address, archive, checkpoint,
                                                                   tmp_path):
    output = tmp_path / "out"
    args = ["classify", str(archive), str(output), "--model", str(checkpoint), "--overwrite"]
    first = start_vidpipe(args, ray_address, pause_at="after_intent", pause_s=8)
    wait_for_line(first, "paused at after_intent")
    code, _, err = run_vidpipe(args)  # the second run, while the first is committing
    assert code == 1 and len(error_lines(err)) == 1, err[-3000:]
    assert "is being written by run" in err
    code, err = finished(first)
    assert code == 0, err[-3000:]
    rows = classify_rows(output)
    keys = [(r["video_uri"], r["segment"]) for r in rows]
    assert len(keys) == len(set(keys)) and len({r["video_uri"] for r in rows}) == 8
