"""Quiet by default: a small classify, scan, train and ablation, run as a user runs them (stderr a
pipe, not a terminal), write only vidpipe's own lines to stderr (periodic progress lines
included), without colour codes or a Python `None`, and name every file and folder they wrote
(the ablation's test also checks its product: the table, its tracking, its checkpoints);
`--verbose` brings Ray's logs back. cluster/local/start.sh and stop.sh say in one line each what
they did.

Before, a 6-video classify wrote 4 lines (Ray's token-auth WARNING, its INFO start-up line, the
summary, and one more) and a 6-video train 45 (Ray Train's placement-group cleaner, MLflow's
artifact bars and pyfunc advice among them). Ray's core worker logs `core_worker.cc ...
constructor arguments in the object store and max_restarts > 0` for every restartable actor
whose constructor gets an object reference (an actor handle is passed that way), and Ray Data
2.60 hands each actor pool's map transformer to its actors that way. On CPU clusters classify
and scan start no actors (tasks decode and classify), so the line is gone there at its cause; it
remains where actors are used (GPU clusters, `--num-actors`). Ray Train's PreemptionWatcher
(max_restarts=-1, given its workers' handles) logged it in every train: a local Ray runs no
watcher (one node: no drain to watch), and on a cluster Ray's own log filter drops that one line
(ray_runtime.KNOWN_RAY_NOISE). Ray Train's placement-group cleaner asked the State API at
127.0.0.1:8265, which a local Ray without a dashboard names; another Ray's dashboard there said
our controller did not exist, the cleaner exited, and the controller printed a 7-line warning; a
local Ray now names a port of its own (ray_runtime.ensure_ray).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoints import MOTION_CLASSES, untrained_checkpoint
from mlflow import MlflowClient

from pipeline.models.checkpoint import load_checkpoint

VIDPIPE = str(Path(sys.executable).parent / "vidpipe")
ROOT = Path(__file__).resolve().parents[1]  # the checkout under test, not the editable install's
RAY_NOISE = ("INFO", "WARNING", "tqdm is not installed", "Running Dataset", "Execution plan",
             "Traceback", "Downloading artifacts", "Failed to query")
RAY_DATA_ACTOR_LINE = "constructor arguments in the object store and max_restarts > 0"


@pytest.fixture(scope="module")
def six_videos(motion_corpus, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("six")
    for source in sorted(motion_corpus.glob("Move*/*.mp4"))[:6]:
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # Large enough (about 3.7 MB) that Ray would put inline constructor arguments in its object store.
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", MOTION_CLASSES,
                                "cnn3d_gru128", frames=8, size=32)


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([VIDPIPE, *args], capture_output=True, text=True, timeout=900, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in RAY_NOISE)]


def assert_plain(stderr: str) -> None:
    """No colour codes (Ray coloured its "(Worker pid=N)" prefixes), no Python None, none of Ray
    Train's known warnings."""
    assert "\x1b[" not in stderr, stderr
    assert not re.search(r"\bNone\b", stderr), stderr
    assert "PreemptionWatcher" not in stderr and "placement group" not in stderr.lower(), stderr


@pytest.mark.slow
def test_small_classify_writes_one_line(six_videos, checkpoint, tmp_path):
    done = run(["classify", str(six_videos), str(tmp_path / "out"), "--model", str(checkpoint)],
               tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert noise(done.stderr) == [] and RAY_DATA_ACTOR_LINE not in done.stderr
    assert_plain(done.stderr)
    # the summary, plus at most a periodic progress line or two on a slow machine
    assert lines[-1].startswith("6 videos, 6 segments, 0 errors")
    assert len(lines) <= 3, done.stderr
    assert all(line.endswith("videos classified") or "videos classified (" in line
               for line in lines[:-1]), done.stderr

    verbose = run(["classify", str(six_videos), str(tmp_path / "out"), "--model", str(checkpoint),
                   "--overwrite", "--verbose"], tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "Started a local Ray instance" in verbose.stderr  # --verbose shows Ray's INFO logs


PROGRESS_LINE = re.compile(r"^(\d+) of (\d+) videos classified \(\d+\.\d\d/s, \d+s\)$")


@pytest.mark.slow
def test_small_scan_shows_periodic_progress_and_little_else(six_videos, checkpoint, tmp_path):
    # one progress line a second (the default is one per half minute), so this small scan shows some
    done = run(["scan", str(six_videos), str(tmp_path / "out"), "--model", str(checkpoint),
                "--date", "2026-12-01"], tmp_path, env={"VIDPIPE_PROGRESS_SECONDS": "1"})
    assert done.returncode == 0, done.stderr
    assert noise(done.stderr) == [] and RAY_DATA_ACTOR_LINE not in done.stderr, done.stderr
    assert_plain(done.stderr)
    lines = done.stderr.splitlines()
    progress = [PROGRESS_LINE.match(line) for line in lines if PROGRESS_LINE.match(line)]
    assert progress, done.stderr  # the periodic lines appear when stderr is not a terminal
    counts = [int(match.group(1)) for match in progress]
    assert counts == sorted(counts) and counts[-1] <= 6, done.stderr
    assert {match.group(2) for match in progress} == {"6"}, done.stderr  # the plan's 6 new videos
    # besides progress: the plan and the commit line; Ray's GCS sometimes adds an error-level
    # "Failed to kill actor ... Socket closed" line or two when Ray Data's shuffle aggregators
    # exit before it kills them (seen once in four runs)
    rest = [line for line in lines if not PROGRESS_LINE.match(line)]
    assert rest[0].endswith("6 videos listed; 6 new, 0 changed, 0 to reprocess, 0 unchanged, "
                            "0 deleted, 0 restored"), done.stderr
    assert rest[-1].startswith("committed "), done.stderr
    assert len(rest) <= 4, done.stderr


@pytest.fixture(scope="module")
def small_corpus(motion_corpus, tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("small-corpus")
    for label in ("MoveLeft", "MoveRight"):  # 4 videos each, from two recording groups
        (corpus / label).mkdir(parents=True)
        for source in sorted((motion_corpus / label).glob("*.mp4"))[:4]:
            shutil.copy(source, corpus / label / source.name)
    return corpus


@pytest.mark.slow
def test_small_train_writes_only_its_own_lines_and_names_what_it_wrote(small_corpus, tmp_path):
    done = run(["train", str(small_corpus), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                "--frames", "8", "--size", "32", "--arch", "cnn3d_none"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert noise(done.stderr) == [] and RAY_DATA_ACTOR_LINE not in done.stderr, done.stderr
    assert_plain(done.stderr)
    # MLflow 3 warned (two lines) on every definition of an untyped pyfunc predict
    assert "UserWarning" not in done.stderr and "type hints" not in done.stderr, done.stderr
    # every file and folder it wrote: the checkpoint, Ray Train's run, the report, MLflow's
    assert f"under {tmp_path / 'ray-train'})" in done.stderr, done.stderr
    assert f"checkpoint written to {tmp_path / 'm.pt'} " in done.stderr, done.stderr
    assert f"report written to {tmp_path / 'm-report'}/ " in done.stderr, done.stderr
    assert (tmp_path / "m-report" / "learning_curve.png").exists()
    tracked = [line for line in done.stderr.splitlines() if line.startswith("tracked as MLflow run")]
    assert len(tracked) == 1 and f"sqlite:///{tmp_path / 'mlflow.db'}" in tracked[0], done.stderr
    assert f"(artifacts: {tmp_path / 'mlruns'}" in tracked[0], done.stderr
    # decoding, training, the epoch, checkpoint, validation, report, tracking
    assert len(done.stderr.splitlines()) <= 7, done.stderr


@pytest.mark.slow
def test_small_ablation_writes_only_its_own_lines_names_its_folder_and_tracks_each_variant(
        small_corpus, tmp_path):
    """Also the ablation's product: its table (stdout and ablation.md), one MLflow run and one
    checkpoint per variant, each checkpoint with the lineage `vidpipe train` writes."""
    archs = ["cnn3d_gru32", "cnn2d_none"]
    done = run(["ablation", str(small_corpus), "--archs", *archs, "--epochs", "1",
                "--frames", "8", "--size", "32", "--out", str(tmp_path / "ablation")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert noise(done.stderr) == [] and RAY_DATA_ACTOR_LINE not in done.stderr, done.stderr
    assert_plain(done.stderr)
    # the table is the product, on stdout, one row per variant in the order asked
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "`" in line]
    assert [row.split("|")[2].strip() for row in rows] == [f"`{arch}`" for arch in archs]
    assert "| model | arch | val accuracy | left chance (epoch) | params |" in done.stdout
    assert (tmp_path / "ablation" / "ablation.md").read_text().strip() in done.stdout
    wrote = [line for line in done.stderr.splitlines() if line.startswith("wrote the table")]
    assert len(wrote) == 1 and wrote[0].endswith(f"to {tmp_path / 'ablation'}/"), done.stderr
    assert all((tmp_path / "ablation" / f"{arch}.pt").exists() for arch in archs)
    assert f"in sqlite:///{tmp_path / 'mlflow.db'}" in done.stderr, done.stderr
    # decoding, then per variant [i/2] training and its epoch, where it wrote, tracking
    assert len(done.stderr.splitlines()) <= 1 + 2 * len(archs) + 2, done.stderr

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vidpipe-ablation").experiment_id])
    assert sorted(r.data.params["arch"] for r in runs) == sorted(archs)
    assert all(r.data.metrics["parameters"] > 0 and "seconds_per_frame" in r.data.metrics
               for r in runs)
    config = load_checkpoint(tmp_path / "ablation" / "cnn3d_gru32.pt")[1]
    assert config.clip_seconds and config.clip_seconds > 0  # classifies in its training windows
    assert {config.dataset_fingerprint} == {r.data.params["dataset_fingerprint"] for r in runs}
    assert len(config.training_videos) > 0


@pytest.mark.slow
def test_cluster_scripts_say_in_one_line_what_they_did(tmp_path):
    from fixtures.s3 import free_port

    port = free_port()
    env = {**os.environ, "VIDPIPE_GCS_PORT": str(port), "VIDPIPE_DASHBOARD_PORT": str(free_port()),
           "RAY_AUTH_MODE": "token",
           "RAY": str(Path(sys.executable).parent / "ray"), "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300"}
    env.pop("RAY_ADDRESS", None)

    def script(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(ROOT / "cluster" / "local" / name)], env=env,
                              capture_output=True, text=True, timeout=600)

    try:
        started = script("start.sh")
        assert started.returncode == 0, started.stderr
    finally:
        stopped = script("stop.sh")
    # Ray's 31-line banner told the user to run `ray stop`, which ends every Ray on the machine
    assert started.stderr == "" and "ray stop" not in started.stdout, started.stdout
    assert started.stdout.count("\n") == 1, started.stdout
    assert f"RAY_ADDRESS=127.0.0.1:{port}" in started.stdout
    assert "stop it with cluster/local/stop.sh" in started.stdout
    assert stopped.returncode == 0 and stopped.stdout.count("\n") == 1, stopped.stdout
    assert stopped.stdout.startswith(f"stopped the loopback Ray cluster on port {port} ")
    # in `ray stop`'s order every process exits on SIGTERM (signalled all at once, the GCS and
    # raylets lingered through the 10 s grace and two of them were killed)
    assert "SIGKILL" not in stopped.stdout, stopped.stdout
    again = script("stop.sh")
    assert again.stdout == f"no loopback Ray cluster on port {port} to stop\n"


def test_ray_filter_drops_exactly_the_known_line():
    from pipeline.ray_runtime import KNOWN_RAY_NOISE

    known = ("[2026-12-06 20:47:29,849 E 26946 26996] core_worker.cc:2465: Actor with class name: "
             "'PreemptionWatcher' and ID: '571e79b86c65c62e7ecfede001000000' has constructor "
             "arguments in the object store and max_restarts > 0. If the arguments in the object "
             "store go out of scope or are lost, the actor restart will fail.")
    assert re.search(KNOWN_RAY_NOISE, known)
    # the same line for Ray Data's actors (--num-actors) is not Ray Train's: it stays visible
    assert not re.search(KNOWN_RAY_NOISE, known.replace("PreemptionWatcher", "MapWorker(Classify)"))
    assert not re.search(KNOWN_RAY_NOISE, "PreemptionWatcher: preemption detected")


def test_local_ray_names_a_state_api_of_its_own(ray_local, monkeypatch):
    """Not 127.0.0.1:8265, where another Ray's dashboard may answer for a Ray it is not."""
    from ray.dashboard.utils import get_address_for_submission_client

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    address = get_address_for_submission_client(ray_local.get_runtime_context().gcs_address)
    assert address.startswith("http://127.0.0.1:") and not address.endswith(":8265"), address


def test_ray_train_polls_its_workers_every_quarter_second_on_a_local_ray(ray_local):
    """The workers of a local Ray (Ray Train's controller among them) get RAY_TRAIN_HEALTH_CHECK_
    INTERVAL_S: the default 2 s made every `vidpipe train` wait about 6 s after its last epoch.
    This driver's own environment stays as it was."""
    from pipeline.ray_runtime import TRAIN_POLL_S, TRAIN_POLL_VARIABLE

    if os.environ.get(TRAIN_POLL_VARIABLE):
        pytest.skip(f"{TRAIN_POLL_VARIABLE} is set in this environment: a user's value stays")
    read = ray_local.remote(lambda: os.environ.get(TRAIN_POLL_VARIABLE))
    assert ray_local.get(read.remote()) == TRAIN_POLL_S
    assert TRAIN_POLL_VARIABLE not in os.environ
