"""Correctness under failure: the champion gate, model lineage, infrastructure failures, the CLI's
one-line errors. Real parts throughout: a real MLflow sqlite store, a real HTTP server answering
errors, real ffmpeg."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest
from checkpoints import untrained_checkpoint
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline import tracking
from pipeline.errors import InvalidInput
from pipeline.ffmpeg_binary import ffmpeg_exe
from pipeline.frames import DECODERS, frame_rate, sample_segments
from pipeline.infrastructure import InfrastructureError, check_this_node
from pipeline.model_store import load_model
from pipeline.segments import decode_video
from videos import run_ffmpeg, write_testsrc


@pytest.fixture
def sqlite_registry(tmp_path, monkeypatch):
    """A real MLflow store (sqlite + local artifacts) in tmp_path; returns its URI."""
    monkeypatch.chdir(tmp_path)  # the default artifact root ./mlruns lands in tmp_path
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    yield uri
    mlflow.set_tracking_uri(None)


def _register(uri: str, name: str, path, seed: int) -> str:
    untrained_checkpoint(path, ("Left", "Right"), seed=seed, frames=8, size=32)
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


# --- infrastructure failures: the node, not the video ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_ffmpeg(monkeypatch, tmp_path):
    """This process as on a node without ffmpeg: none on PATH, IMAGEIO_FFMPEG_EXE pointing nowhere."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-such-ffmpeg"))
    ffmpeg_exe.cache_clear()
    yield
    monkeypatch.undo()
    ffmpeg_exe.cache_clear()


def _listed(path: Path) -> dict:
    from pipeline.storage import fingerprint  # the version a listing gives: decoding checks it

    return {"video_uri": str(path), "video_etag": fingerprint(str(path)),
            "video_bytes": path.stat().st_size}


def test_missing_ffmpeg_fails_the_node_not_each_video(tmp_path, request):
    video = write_testsrc(tmp_path / "ok.mp4", 1)
    request.getfixturevalue("no_ffmpeg")
    with pytest.raises(InfrastructureError, match="ffmpeg"):
        decode_video(_listed(video), 8, 32, None, decoder="ffmpeg")
    assert "ffmpeg" in check_this_node(None, "ffmpeg")


def test_a_node_that_cannot_see_a_local_input_says_so(tmp_path):
    assert check_this_node(str(tmp_path)) is None
    problem = check_this_node(str(tmp_path / "not-mounted-here"))
    assert "cannot see the local INPUT" in problem and "shared storage" in problem


def test_full_temp_space_fails_the_node_and_leaves_no_temp_file(tmp_path):
    """A real full /dev/shm: a 4 KiB tmpfs mounted over it in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a tiny /dev/shm privately")
    video = write_testsrc(tmp_path / "big.mp4", 2, size="320x240")
    assert video.stat().st_size > 4096
    script = (
        "import glob, json, sys\n"
        "from pipeline.infrastructure import InfrastructureError\n"
        "from pipeline.segments import decode_video\n"
        f"data = open({str(video)!r}, 'rb').read()\n"
        "listed = {'video_uri': 's3://b/big.mp4', 'video_etag': 'e', 'video_bytes': len(data)}\n"
        "try:\n"
        "    outcome = {'rows': [r['error'] for r in decode_video(listed, 8, 32, None, data=data, decoder='ffmpeg')]}\n"
        "except InfrastructureError as exc:\n"
        "    outcome = {'infrastructure': str(exc)}\n"
        "outcome['left'] = glob.glob('/dev/shm/vidpipe-*')\n"
        "print(json.dumps(outcome))\n")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         'mount -t tmpfs -o size=4k tmpfs /dev/shm || exit 77; exec "$0" -c "$1"',
         sys.executable, script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if done.returncode == 77:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert "No space left" in outcome.get("infrastructure", ""), outcome
    assert outcome["left"] == []


@pytest.mark.slow
def test_classify_without_ffmpeg_fails_with_one_line_and_writes_nothing(tmp_path):
    """The real CLI with its own local Ray whose workers have no ffmpeg: one clear line, exit 1,
    no Parquet of error rows that would blame the videos."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_testsrc(videos / name, 1)
    untrained_checkpoint(tmp_path / "model.pt", ("Left", "Right"), frames=8, size=32)
    system = "/usr/bin:/bin"  # Ray starts its workers through bash
    if shutil.which("ffmpeg", path=system):
        pytest.skip("this machine has a system ffmpeg in /usr/bin")
    env = {**os.environ, "PATH": system, "IMAGEIO_FFMPEG_EXE": str(tmp_path / "no-ffmpeg")}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "classify", str(videos), str(tmp_path / "out"),
         "--model", str(tmp_path / "model.pt"), "--decoder", "ffmpeg"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("vidpipe: error:")]
    assert len(errors) == 1 and "ffmpeg" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "out").rglob("*.parquet"))


# --- the CLI's one-line errors -----------------------------------------------------------------


def test_cli_reports_expected_errors_in_one_line_and_keeps_bugs_loud():
    from ray.exceptions import RayTaskError

    from pipeline.cli import _expected

    assert _expected(ValueError("a bug")) is None  # keeps its traceback
    assert _expected(KeyError("a bug")) is None
    assert isinstance(_expected(InvalidInput("bad flags")), InvalidInput)
    assert isinstance(_expected(OSError("Forbidden")), OSError)  # what s3fs raises
    node = InfrastructureError("node x: no ffmpeg")
    wrapped = RayTaskError("decode", "Traceback (most recent call last):\n  ...", node)
    found = _expected(wrapped.as_instanceof_cause())
    assert str(found) == "node x: no ffmpeg"


@pytest.mark.parametrize("decoder", DECODERS)
def test_frame_rate_is_the_exact_rational_rate(tmp_path, decoder):
    assert frame_rate("24000/1001") == 24000 / 1001
    assert frame_rate("25") == 25.0 and frame_rate("0/0") == 0.0
    video = tmp_path / "ntsc.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=24000/1001:duration=3",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video))
    info, segments = sample_segments(str(video), num_frames=4, size=(32, 32), window_seconds=1.0,
                                     decoder=decoder)
    assert info.fps == pytest.approx(24000 / 1001, abs=1e-9)  # not ffmpeg's display, 23.98
    assert info.duration_s == pytest.approx(info.num_frames * 1001 / 24000, abs=1e-9)
    assert [segment.start_s for segment in segments] == [0.0, 1.0, 2.0]
