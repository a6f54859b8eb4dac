"""Correctness under failure: the champion gate, model lineage, infrastructure failures, the CLI's
one-line errors. Real parts throughout: a real MLflow sqlite store, a real HTTP server answering
errors, real ffmpeg."""

from __future__ import annotations

import http.server
import threading

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline import tracking
from pipeline.model_store import load_model
from pipeline.models.checkpoint import ModelConfig, save_checkpoint

CONFIG = ModelConfig("cnn3d_gru32", ("Left", "Right"), frames=8, size=32)


@pytest.fixture
def sqlite_registry(tmp_path, monkeypatch):
    """A real MLflow store (sqlite + local artifacts) in tmp_path; returns its URI."""
    monkeypatch.chdir(tmp_path)  # the default artifact root ./mlruns lands in tmp_path
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    yield uri
    mlflow.set_tracking_uri(None)


def _register(uri: str, name: str, path, seed: int) -> str:
    torch.manual_seed(seed)
    save_checkpoint(CONFIG.build(), CONFIG, path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run():
        info = tracking.log_model(str(path), name)
    return str(info.registered_model_version)


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 500

    def _reply(self):
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"broken registry")

    do_GET = do_POST = _reply

    def log_message(self, *args):
        pass


@pytest.fixture
def erroring_server():
    """A real HTTP server on loopback answering every request with `status`; yields a setter."""
    servers = []

    def start(status: int) -> str:
        handler = type("Handler", (_Answer,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def test_no_registered_model_means_no_champion(sqlite_registry):
    assert tracking.champion_version(sqlite_registry, "never-registered") is None


@pytest.mark.parametrize("status", [500, 403, 503])
def test_gate_fails_loudly_when_the_registry_answers_an_error(erroring_server, status, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException):
        tracking.champion_version(erroring_server(status), "vidpipe-test")


def test_gate_fails_loudly_when_the_registry_is_unreachable(monkeypatch):
    from fixtures.s3 import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises((MlflowException, OSError)):
        tracking.champion_version(f"http://127.0.0.1:{free_port()}", "vidpipe-test")


def test_alias_is_resolved_once_so_rows_name_the_weights_they_used(sqlite_registry, tmp_path,
                                                                   monkeypatch):
    """A promotion between the alias lookup and the download must not mix versions."""
    first = _register(sqlite_registry, "raced", tmp_path / "v1.pt", seed=1)
    second = _register(sqlite_registry, "raced", tmp_path / "v2.pt", seed=2)
    client = MlflowClient(tracking_uri=sqlite_registry, registry_uri=sqlite_registry)
    client.set_registered_model_alias("raced", "champion", first)
    download = mlflow.artifacts.download_artifacts

    def promote_then_download(*args, **kwargs):  # the race, made deterministic
        client.set_registered_model_alias("raced", "champion", second)
        return download(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", promote_then_download)
    loaded = load_model("models:/raced@champion", sqlite_registry)
    assert loaded.lineage.model_version == first
    assert loaded.checkpoint == (tmp_path / "v1.pt").read_bytes()
