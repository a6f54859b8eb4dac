"""Faults between vidpipe and S3: the loopback proxy in front of the moto server
(tests/fixtures/s3_proxy.py) answers 503 or drops the connection for a while. The job must retry
with backoff and end in success or error rows: every video exactly once, nothing lost, nothing
duplicated.

The faults start at the job's first S3 request (preflight's look at INPUT) and last 8 s: the
requests they hit are retried until S3 answers, and the videos, read well after that, all decode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checkpoints import untrained_checkpoint

from pipeline.synthetic import make_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_s3_errors_for_a_while_end_in_rows_for_every_video_once(s3_proxy, s3fs_client, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), classes=("MoveLeft", "MoveRight"), per_class=6, groups=2, seed=5)
    s3fs_client.mkdir("faulty")
    s3fs_client.put(str(corpus) + "/", "faulty/in/", recursive=True)
    uploaded = sorted(s3fs_client.find("faulty/in"))
    untrained_checkpoint(tmp_path / "model.pt", ("MoveLeft", "MoveRight"), frames=8, size=32)

    proxy, traffic = s3_proxy, s3_proxy.traffic
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}  # the job's only way to S3
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "pipeline.cli", "classify", "s3://faulty/in",
               "s3://faulty/out", "--model", str(tmp_path / "model.pt"), "--window-seconds", "0",
               "--error-threshold", "1", "--json"]
    try:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        # Faults start once the job talks to S3 (preflight) and last 8 s.
        deadline = time.time() + 300
        while traffic.forwarded == 0 and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        proxy.rules.faulty_until = time.time() + 8
        stdout, stderr = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    assert traffic.faults > 0, "no fault was injected"
    assert process.returncode == 0, stderr[-4000:]
    assert traffic.faulted <= traffic.answered, \
        f"requests given up after a fault: {sorted(traffic.faulted - traffic.answered)}"
    import json

    summary = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    # Whole videos (--window-seconds 0): one segment per video, and every one read after the faults.
    counts = {key: summary[key] for key in ("videos", "segments", "errors")}
    assert counts == {"videos": len(uploaded), "segments": len(uploaded), "errors": 0}, counts

    import pyarrow.parquet as pq

    rows = []
    for path in s3fs_client.glob("faulty/out/*.parquet"):
        with s3fs_client.open(path, "rb") as handle:
            rows += pq.read_table(handle, columns=["video_uri", "status", "error"]).to_pylist()
    uris = sorted(row["video_uri"].removeprefix("s3://") for row in rows)
    assert uris == uploaded, "every video exactly once (whole videos: one row each)"
    errors = [(row["video_uri"], row["error"]) for row in rows if row["status"] != "ok"]
    assert not errors, errors
    print(f"\nfaults injected: {traffic.faults}; requests forwarded: {traffic.forwarded}; "
          f"ok rows: {sum(row['status'] == 'ok' for row in rows)} of {len(rows)}")
