"""Fail fast: what can be seen before any work starts is one line on stderr, exit 1, no traceback,
and Ray never started (its temp dir stays empty) — each case as a user runs it, in a subprocess.

The wall-time bounds are generous ceilings against the failure modes the issue measured (249 s
of silence for an unreachable MLflow, a traceback after all the work), not speed targets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checkpoints import untrained_checkpoint

VIDPIPE = str(Path(sys.executable).parent / "vidpipe")
ROOT = Path(__file__).resolve().parents[1]  # the checkout under test, not the editable install's
BOUND_S = 150  # importing torch and MLflow takes seconds (over a minute on a loaded 2-core CI box);
# the structural check is that Ray never started (its temp dir stays empty)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt",
                                ("MoveLeft", "MoveRight"), "cnn3d_none", frames=8, size=32)


@pytest.fixture(scope="module")
def videos(motion_corpus) -> Path:
    return motion_corpus / "MoveLeft"


def fails_fast(args: list[str], tmp_path: Path, *, cwd: Path | None = None) -> str:
    """Run vidpipe; assert the one-line error, exit 1, bounded time and no Ray; return the line."""
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir(exist_ok=True)
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "RAY_TMPDIR": str(ray_tmp),
           "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run([VIDPIPE, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or tmp_path, env=env)
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines and lines[-1].startswith("vidpipe: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert seconds < BOUND_S, f"took {seconds:.0f}s"
    assert not any(ray_tmp.iterdir()), "Ray was started before the error"
    return lines[-1]


def test_input_missing_and_input_empty_say_different_things(tmp_path, checkpoint):
    out = str(tmp_path / "out")
    missing = fails_fast(["classify", str(tmp_path / "nope"), out, "--model", str(checkpoint)], tmp_path)
    assert "does not exist" in missing
    (tmp_path / "empty").mkdir()
    empty = fails_fast(["classify", str(tmp_path / "empty"), out, "--model", str(checkpoint)], tmp_path)
    assert "is empty: no files" in empty and ".mp4" in empty
    # files, but none a video: which files it saw, and what counts as a video
    (tmp_path / "notes" / "sub").mkdir(parents=True)
    for name in ("sub/notes.txt", "labels.csv", "a.json", "b.json"):
        (tmp_path / "notes" / name).write_text("not a video")
    notes = fails_fast(["classify", str(tmp_path / "notes"), out, "--model", str(checkpoint)], tmp_path)
    assert "is empty" not in notes, notes
    assert "no video files in it or below it, only 4 other file(s): a.json, b.json, labels.csv, ..." in notes
    assert "video files end in .mp4, .avi, .mkv" in notes
    assert not Path(out).exists()


def test_output_an_existing_file(tmp_path, videos, checkpoint):
    (tmp_path / "taken").write_text("x")
    line = fails_fast(["classify", str(videos), str(tmp_path / "taken"), "--model", str(checkpoint)],
                      tmp_path)
    assert "is an existing file" in line


def test_output_under_a_regular_file(tmp_path, videos, checkpoint):
    (tmp_path / "file").write_text("x")
    line = fails_fast(["classify", str(videos), str(tmp_path / "file" / "sub" / "out"), "--model",
                       str(checkpoint)], tmp_path)
    assert "which is a regular file" in line and str(tmp_path / "file") in line


def test_output_not_writable(tmp_path, videos, checkpoint):
    # root ignores permission bits, so use a mount nobody can write: /proc
    line = fails_fast(["classify", str(videos), "/proc/vidpipe-out", "--model", str(checkpoint)],
                      tmp_path)
    assert "not writable" in line


def test_output_not_empty_needs_overwrite(tmp_path, videos, checkpoint):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-0.parquet").write_bytes(b"earlier result")
    line = fails_fast(["classify", str(videos), str(tmp_path / "out"), "--model", str(checkpoint)],
                      tmp_path)
    assert "is not empty" in line and "--overwrite" in line


def test_model_file_missing(tmp_path, videos):
    line = fails_fast(["classify", str(videos), str(tmp_path / "out" / "deeper"), "--model",
                       str(tmp_path / "missing.pt")], tmp_path)
    assert "missing.pt does not exist" in line
    assert not (tmp_path / "out").exists()  # a failed command leaves no OUTPUT behind


def test_model_file_that_is_no_checkpoint(tmp_path, videos):
    (tmp_path / "notes.pt").write_text("not a model")
    line = fails_fast(["classify", str(videos), str(tmp_path / "out"), "--model",
                       str(tmp_path / "notes.pt")], tmp_path)
    assert line == "vidpipe: error: not a readable checkpoint: BadZipFile"
    assert not (tmp_path / "out").exists()


def test_registry_lookup_without_a_store_names_it_and_creates_none(tmp_path, videos):
    line = fails_fast(["classify", str(videos), str(tmp_path / "out"), "--model",
                       "models:/vidpipe@champion"], tmp_path)
    assert f"no MLflow store at sqlite:///{tmp_path / 'mlflow.db'}" in line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()


def test_registry_without_the_model_leaves_no_output(tmp_path, videos):
    # The store exists and answers, so preflight passes; the lookup then fails in the command.
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=store, registry_uri=store).search_registered_models()
    line = fails_fast(["classify", str(videos), str(tmp_path / "out"), "--model",
                       "models:/nope@champion", "--mlflow-uri", store], tmp_path)
    assert "nope" in line
    assert not (tmp_path / "out").exists()


def test_output_folder_is_removed_after_a_failure_only_while_empty(tmp_path):
    from pipeline import preflight

    with pytest.raises(RuntimeError), preflight.output_folder(str(tmp_path / "a" / "b")):
        raise RuntimeError("the command failed")
    assert not (tmp_path / "a").exists()
    with pytest.raises(RuntimeError), preflight.output_folder(str(tmp_path / "c" / "d")):
        (tmp_path / "c" / "d" / "_lease.json").write_text("{}")  # the command wrote something
        raise RuntimeError("the command failed")
    assert (tmp_path / "c" / "d" / "_lease.json").exists()
    (tmp_path / "e").mkdir()
    with pytest.raises(RuntimeError), preflight.output_folder(str(tmp_path / "e")):
        raise RuntimeError("the command failed")
    assert (tmp_path / "e").is_dir()  # it was there before: not ours to remove
    with preflight.output_folder(str(tmp_path / "f")):
        pass
    assert (tmp_path / "f").is_dir()  # success keeps it


def test_mlflow_refused_is_quick_with_a_retry_line_and_redacted(tmp_path, videos):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    uri = f"http://alice:s3cret-pw@127.0.0.1:{port}"
    ray_tmp = tmp_path / "ray-tmp"
    line = fails_fast(["classify", str(videos), str(tmp_path / "out"), "--model",
                       "models:/vidpipe@champion", "--mlflow-uri", uri], tmp_path)
    # the credentials left the URI on entry (credentials.py): the message names the bare server
    assert "is unreachable" in line and f"http://127.0.0.1:{port}" in line
    assert "s3cret-pw" not in line and "alice" not in line
    assert not any(ray_tmp.iterdir())


def test_mlflow_silent_server_times_out_with_progress(tmp_path, videos):
    """A server that accepts connections but never answers: short timeouts, a line per retry."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
        port = silent.getsockname()[1]
        ray_tmp = tmp_path / "ray-tmp"
        ray_tmp.mkdir()
        env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
               "RAY_TMPDIR": str(ray_tmp), "HOME": str(tmp_path)}
        done = subprocess.run([VIDPIPE, "train", str(videos.parent), "--out", str(tmp_path / "m.pt"),
                               "--register", "vidpipe", "--mlflow-uri",
                               f"http://token:abc123@127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert sum("does not answer" in line and "retrying" in line for line in lines) == 2
    assert lines[-1].startswith("vidpipe: error: MLflow at http://127.0.0.1") and "unreachable" in lines[-1]
    assert "abc123" not in done.stderr and "token:" not in done.stderr
    assert not any(ray_tmp.iterdir())


def test_train_out_is_a_folder(tmp_path, videos):
    (tmp_path / "models").mkdir()
    line = fails_fast(["train", str(videos.parent), "--out", str(tmp_path / "models")], tmp_path)
    assert "is a folder" in line
