"""Faults between vidpipe and S3: a small fault-injecting HTTP proxy on loopback in front of the moto
server answers 503 or drops the connection for a while. The job must retry with backoff and end in
success or error rows: every video exactly once, nothing lost, nothing duplicated.

The faults start at the job's first S3 request (preflight's look at INPUT) and last 8 s: the
requests they hit are retried until S3 answers, and the videos, read well after that, all decode.
"""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from pipeline.models.checkpoint import ModelConfig, save_checkpoint
from pipeline.synthetic import make_corpus

ROOT = Path(__file__).resolve().parents[1]


class FaultyProxy:
    """Forwards HTTP to `upstream` ("host:port"); while `faulty_until` is in the future, every
    other request gets a 503 and every other one has its connection dropped unanswered."""

    def __init__(self, upstream: str):
        proxy = self
        self.upstream, self.faulty_until, self.faults, self.forwarded = upstream, 0.0, 0, 0
        self.faulted: set[tuple[str, str]] = set()  # (method, path) of requests that got a fault
        self.answered: set[tuple[str, str]] = set()  # ... that S3 answered
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    faulty = time.time() < proxy.faulty_until
                    if faulty:
                        proxy.faults += 1
                        proxy.faulted.add((self.command, self.path))
                    drop = faulty and proxy.faults % 2 == 0
                if drop:  # the connection dies mid-request
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if faulty:
                    message = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                # A HEAD reply has no body but states the object's size, which s3fs opens a file
                # by: Content-Length 0 there made every video read as empty.
                length = reply.getheader("Content-Length", "0") if self.command == "HEAD" \
                    else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()
                with proxy.lock:
                    proxy.forwarded += 1
                    proxy.answered.add((self.command, self.path))

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.mark.slow
def test_s3_errors_for_a_while_end_in_rows_for_every_video_once(s3_endpoint, s3fs_client, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), classes=("MoveLeft", "MoveRight"), per_class=6, groups=2, seed=5)
    s3fs_client.mkdir("faulty")
    s3fs_client.put(str(corpus) + "/", "faulty/in/", recursive=True)
    uploaded = sorted(s3fs_client.find("faulty/in"))
    config = ModelConfig("cnn3d_gru32", ("MoveLeft", "MoveRight"), frames=8, size=32)
    torch.manual_seed(0)
    save_checkpoint(config.build(), config, tmp_path / "model.pt")

    proxy = FaultyProxy(s3_endpoint.removeprefix("http://"))
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
        while proxy.forwarded == 0 and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        proxy.faulty_until = time.time() + 8
        stdout, stderr = process.communicate(timeout=900)
    finally:
        proxy.close()
    assert proxy.faults > 0, "no fault was injected"
    assert process.returncode == 0, stderr[-4000:]
    assert proxy.faulted <= proxy.answered, \
        f"requests given up after a fault: {sorted(proxy.faulted - proxy.answered)}"
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
    print(f"\nfaults injected: {proxy.faults}; requests forwarded: {proxy.forwarded}; "
          f"ok rows: {sum(row['status'] == 'ok' for row in rows)} of {len(rows)}")
