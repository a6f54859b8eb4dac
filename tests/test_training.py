"""Ray Train retraining, MLflow tracking against a real `mlflow server`, the champion gate, resume.

The accuracy threshold: the corpus has four motions in two opposite pairs (left/right, up/down).
A model blind to frame order can at best tell horizontal from vertical, i.e. 50% accuracy; chance
is 25%. Reaching TEMPORAL_THRESHOLD (75%) therefore requires telling opposite motions apart, which
only temporal modelling can do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.ray_cluster import last_json
from mlflow import MlflowClient
from vidpipe_calls import run_vidpipe

from pipeline.frames import sample_clip
from pipeline.models.checkpoint import load_checkpoint
from pipeline.synthetic import make_corpus
from pipeline.train_job import RUN_MARKER
from pipeline.training import EpochStats, TrainSettings, left_chance_epoch
from pipeline.models import DEFAULT_ARCH, canonical_arch, predict_probs

ROOT = Path(__file__).resolve().parents[1]
TEMPORAL_THRESHOLD = 0.75
EPOCHS = TrainSettings().epochs  # given as --epochs to the champion and the order-blind baseline
REGISTERED = "vidpipe-test"


@pytest.fixture(scope="module")
def training_corpus(tmp_path_factory) -> Path:
    """96 videos, 4 motion classes, 8 recording groups per class: 6 train (72 clips, as many as
    with 4 groups and one held out), one selects the epoch, one is the champion gate's."""
    root = tmp_path_factory.mktemp("training-corpus")
    make_corpus(str(root), per_class=24, groups=8, seed=11)
    return root


@pytest.fixture(scope="module")
def champion_run(ray_local, training_corpus, mlflow_server, tmp_path_factory) -> dict:
    """The default model trained with 2 Ray Train workers and registered: the first champion.

    Every setting is the default but the length: the default 15 epochs exactly (`--epochs`),
    not the 67 that TrainSettings.min_steps (600 steps) makes of this corpus's 9 steps an epoch
    (134 s of training on 2 cores, 2 minutes of the suite). What the test checks is decided in the
    first epochs; the min_steps rule is test_recipe's (Schedule), and `make demo` runs it."""
    out = tmp_path_factory.mktemp("champion") / "model.pt"
    code, summary, err = run_vidpipe(
        ["train", str(training_corpus), "--out", str(out), "--epochs", str(EPOCHS),
         "--workers", "2", "--register", REGISTERED, "--mlflow-uri", mlflow_server, "--json"])
    assert code == 0, err[-3000:]
    return {**summary, "stderr": err}


@pytest.mark.slow
def test_two_workers_learn_motion_with_the_defaults_and_everything_is_tracked(champion_run,
                                                                              mlflow_server):
    assert champion_run["workers"] == 2
    history = [EpochStats(**e) for e in champion_run["epochs"]]
    epochs = EPOCHS  # exactly, as asked (72 clips over 2 workers: 9 steps an epoch)
    assert [e.epoch for e in history] == list(range(1, epochs + 1))
    # Defaults (no --lr) leave the chance plateau within a few epochs: twice chance here is 0.5,
    # what an order-blind model reaches, so leaving it means telling directions apart. The
    # previous default (cnn3dbnmix_gru) reached 0.5 at epoch 4, 4, 5, 4, 4 over training seeds
    # 0-4 and the demo's corpus at 4 and 6; motion3d_gru at epoch 2 on this corpus (val 0.67,
    # then 1.0 at epoch 3). The bound stays 6, so that a slow run does not fail by chance.
    assert left_chance_epoch(history, 4) <= 6, [e.val_accuracy for e in history]
    assert champion_run["val_accuracy"] >= TEMPORAL_THRESHOLD, champion_run["evaluation"]
    best = max(history, key=lambda e: (e.val_accuracy, -e.val_loss, e.epoch))
    assert champion_run["best_epoch"] == best.epoch
    assert champion_run["val_accuracy"] == pytest.approx(best.val_accuracy)
    model, config = load_checkpoint(champion_run["checkpoint"])
    assert config.arch == canonical_arch(DEFAULT_ARCH) == "motion3d_gru128" and config.num_classes == 4
    # The clip span the model was trained on (the synthetic clips last 1.5-3 s) is part of it.
    assert 1.5 <= config.clip_seconds <= 3.0 and config.dataset_fingerprint
    # One progress line per epoch, not two (Ray Train re-logs printed lines).
    for epoch in range(1, epochs + 1):
        assert champion_run["stderr"].count(f"epoch {epoch}/{epochs}:") == 1, champion_run["stderr"]

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    run = client.get_run(champion_run["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["arch"] == config.arch and params["workers"] == "2"
    assert params["epochs"] == str(EPOCHS) and params["min_steps"] == "0"  # exactly EPOCHS
    assert float(params["lr"]) == TrainSettings().lr
    assert len(params["dataset_fingerprint"]) == 16
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # logged by rank 0 per epoch
    assert len(client.get_metric_history(run.info.run_id, "clips_per_s")) == epochs
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"label_map.json", "evaluation.json", "confusion_matrix.png",
            "learning_curve.png"} <= artifacts
    label_map = json.loads(Path(client.download_artifacts(run.info.run_id, "label_map.json")).read_text())
    assert label_map == {str(i): name for i, name in enumerate(config.class_names)}

    # The first champion: above chance and the majority class on 12 gate clips, which neither
    # epoch selection nor training used.
    assert champion_run["alias"] == "champion", champion_run["gate"]
    assert champion_run["gate"]["gate_clips"] == 12 and champion_run["gate_videos"] == 12
    assert champion_run["val_clips"] == 12  # the selection part
    version = client.get_model_version_by_alias(REGISTERED, "champion")
    assert version.version == "1" and version.run_id == run.info.run_id
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{REGISTERED}/1")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 20, 64, 64, 3)
    # The logged model is code + checkpoint: pyfunc loading runs our wrapper, unpickles nothing,
    # and predicts exactly what the checkpoint predicts.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1")
    clips = np.random.default_rng(0).integers(0, 256, (2, 20, 64, 64, 3), dtype=np.uint8)
    assert np.allclose(pyfunc.predict(clips), predict_probs(model, clips), atol=1e-6)


@pytest.mark.slow
def test_order_blind_baseline_stays_near_chance_and_does_not_take_the_champion(
        champion_run, training_corpus, mlflow_server, tmp_path):
    code, summary, err = run_vidpipe(
        ["train", str(training_corpus), "--out", str(tmp_path / "baseline.pt"), "--arch",
         "cnn2d_none", "--epochs", str(EPOCHS), "--workers", "2", "--register", REGISTERED,
         "--mlflow-uri", mlflow_server, "--json"])
    assert code == 0, err[-3000:]
    # Order-blind, exactly: the baseline scores a clip and the same clip played backwards alike,
    # and a motion played backwards is its opposite (MoveLeft's clip reversed moves right), so it
    # cannot tell a direction from its opposite (the champion does: TEMPORAL_THRESHOLD, above).
    # The champion scores the two differently. (A bound on the baseline's accuracy between
    # opposites, measured on the 6-9 of the 12 selection clips that land in a pair, failed by
    # chance: 5 of 6 right once.)
    blind, config = load_checkpoint(tmp_path / "baseline.pt")
    champion, champion_config = load_checkpoint(champion_run["checkpoint"])
    videos = [sorted((training_corpus / name).rglob("*.mp4"))[0] for name in config.class_names]
    for model, used in ((blind, config), (champion, champion_config)):
        clips = np.stack([sample_clip(video, used.frames, (used.size, used.size)) for video in videos])
        forward, backward = predict_probs(model, clips), predict_probs(model, clips[:, ::-1])
        assert np.allclose(forward, backward, atol=1e-5) == (model is blind), (forward, backward)

    assert summary["alias"] == "challenger" and summary["model_version"] == "2"
    gate = summary["gate"]
    assert gate["champion_version"] == "1"
    # The champion was re-scored on the same gate clips: the number the first run measured there.
    assert gate["gate_clips"] == 12
    assert gate["champion_accuracy"] == pytest.approx(champion_run["gate"]["new_accuracy"])
    assert gate["new_accuracy"] < gate["champion_accuracy"]
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias(REGISTERED, "champion").version == "1"
    assert client.get_model_version_by_alias(REGISTERED, "challenger").version == "2"
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert metrics["gate_champion_accuracy"] == pytest.approx(gate["champion_accuracy"])
    assert metrics["gate_new_accuracy"] == pytest.approx(gate["new_accuracy"])


@pytest.mark.slow
def test_evaluate_a_registered_model_by_alias(champion_run, training_corpus, mlflow_server,
                                              tmp_path):
    """`vidpipe evaluate` on models:/NAME@champion scores exactly as the checkpoint file does."""
    code, by_alias, err = run_vidpipe(["evaluate", str(training_corpus), "--model",
                                f"models:/{REGISTERED}@champion", "--mlflow-uri", mlflow_server,
                                "--window-seconds", "1", "--out", str(tmp_path / "eval"),
                                "--json"])
    assert code == 0, err[-2000:]
    code, by_file, _ = run_vidpipe(["evaluate", str(training_corpus), "--model",
                             champion_run["checkpoint"], "--window-seconds", "1", "--json"])
    assert code == 0
    assert by_alias["model_version"] == "1"
    for key in ("clip_accuracy", "video_accuracy", "top5_accuracy", "confusion", "per_class"):
        assert by_alias[key] == by_file[key]
    # Windows of 1 s cut these 1.5-3 s videos into several clips each; a video is scored by the
    # mean of its clips' probabilities.
    assert by_alias["videos"] == 96 and by_alias["clips"] > 96
    # By default the window is the training clips' median span (~2.3 s here), and no video
    # reaches 1.5 windows: each is one clip, its remainder joined to its window.
    code, by_default, _ = run_vidpipe(["evaluate", str(training_corpus), "--model",
                                champion_run["checkpoint"], "--json"])
    assert code == 0 and by_default["videos"] == by_default["clips"] == 96
    assert sum(map(sum, by_alias["confusion"])) == by_alias["clips"]
    assert 0 < by_alias["seconds_per_frame"] < 0.0719  # the paper's "real time" figure, on CPU
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["clip_accuracy"] == by_alias["clip_accuracy"]


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(motion_corpus, tmp_path, ray_local):
    storage, out, epochs = tmp_path / "runs", tmp_path / "model.pt", 12
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ["train", str(motion_corpus), "--out", str(out), "--arch", "cnn2d_gru32",
               "--frames", "8", "--size", "32", "--epochs", str(epochs), "--workers", "1",
               "--storage-path", str(storage), "--name", "resumable", "--mlflow-uri", mlflow_uri,
               "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *command], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    run_dir = storage / "resumable"
    deadline = time.time() + 300
    try:
        # Ray Train has committed a checkpoint (its snapshot exists) and is saving another.
        while not ((run_dir / "checkpoint_manager_snapshot.json").exists()
                   and len(list(run_dir.glob("checkpoint_*"))) >= 2):
            assert first.poll() is None, "the training ended before it could be killed"
            assert time.time() < deadline, "no checkpoints appeared"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
        first.wait()
    first_run_id = json.loads((run_dir / RUN_MARKER).read_text())["mlflow_run_id"]

    code, summary, err = run_vidpipe(command)
    assert code == 0, err[-3000:]
    resumed = summary["resumed_from_epoch"]
    assert 1 <= resumed < epochs  # the last checkpoint Ray Train had committed: epoch 1 or later
    assert f"resumed from epoch {resumed}" in err
    assert [e["epoch"] for e in summary["epochs"]] == list(range(1, epochs + 1))
    assert summary["mlflow_run_id"] == first_run_id  # the same MLflow run carried on
    history = MlflowClient(tracking_uri=mlflow_uri).get_metric_history(first_run_id, "loss")
    assert {m.step for m in history} == set(range(1, epochs + 1))


def test_mlflow_outage_keeps_the_checkpoint(motion_corpus, tmp_path, ray_local, monkeypatch):
    from fixtures.s3 import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    out = tmp_path / "model.pt"
    down = f"http://user:s3cret@127.0.0.1:{free_port()}"
    args = ["train", str(motion_corpus), "--out", str(out), "--arch", "cnn2d_gru32",
            "--frames", "8", "--size", "32", "--epochs", "1", "--mlflow-uri", down]
    # Registering is the point of such a run: with MLflow down it stops before training (preflight).
    code, _, err = run_vidpipe(args + ["--register", "x"])
    assert code == 1 and not out.exists()
    last = err.strip().splitlines()[-1]
    assert last.startswith("vidpipe: error: MLflow at http://127.0.0.1:") and "unreachable" in last
    # Without --register the model is trained and kept, untracked, saying so.
    code, _, err = run_vidpipe(args)
    assert code == 0, err[-2000:]
    assert "training without tracking" in err
    assert "s3cret" not in err  # credentials in the tracking URI never reach the logs
    model, config = load_checkpoint(out)
    assert config.arch == "cnn2d_gru32"


def test_clip_cache_is_reused_only_for_the_same_videos_and_sampling(motion_corpus, bad_videos,
                                                                   tmp_path, ray_local):
    from pipeline.clips import decode_labelled, to_arrays
    from pipeline.corpus import LabelledVideo, read_corpus

    corpus = read_corpus(str(motion_corpus))
    broken = LabelledVideo(f"file://{bad_videos['truncated']}", "MoveUp", "g99")
    videos = list(corpus.videos[:6])
    cache = str(tmp_path / "cache")
    first = decode_labelled(videos + [broken], 8, 32, cache_uri=cache)
    assert first.count == 6 and first.dataset.count() == 6  # the broken video is skipped, named
    assert [uri for uri, _ in first.skipped] == [broken.uri]
    videos.append(broken)
    again = decode_labelled(videos, 8, 32, cache_uri=cache)
    assert (first.cache, again.cache) == ("written", "hit")
    assert again.skipped == first.skipped
    clips, labels, uris = to_arrays(first.dataset, corpus.class_names, 8, 32)
    cached, cached_labels, cached_uris = to_arrays(again.dataset, corpus.class_names, 8, 32)
    order, cached_order = np.argsort(uris), np.argsort(cached_uris)
    assert np.array_equal(clips[order], cached[cached_order])
    assert np.array_equal(labels[order], cached_labels[cached_order])
    assert decode_labelled(videos, 10, 32, cache_uri=cache).cache == "written"  # other sampling
    changed = tmp_path / "changed.mp4"
    changed.write_bytes(Path(videos[0].uri.removeprefix("file://")).read_bytes())
    replaced = [LabelledVideo(f"file://{changed}", videos[0].label, videos[0].group,
                              "fp-different")] + videos[1:]
    assert decode_labelled(replaced, 8, 32, cache_uri=cache).cache == "written"  # other videos


@pytest.mark.slow
def test_retrain_job_trains_across_both_nodes_of_a_cluster(ray_cluster, motion_corpus, tmp_path):
    out = tmp_path / "model.pt"
    done = ray_cluster.submit(
        ["jobs/retrain.py", str(motion_corpus), "--out", str(out), "--arch", "cnn2d_gru32",
         "--frames", "8", "--size", "32", "--epochs", "2", "--workers", "2",
         "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = last_json(done.stdout)
    assert summary["workers"] == 2
    assert len(summary["nodes"]) == 2  # one DDP worker on each node (each has one CPU)
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert load_checkpoint(out)[1].arch == "cnn2d_gru32"


def test_the_gate_on_a_real_store_refuses_chance_and_clips_the_champion_trained_on(
        motion_corpus, tmp_path, ray_local):
    """The gate as `vidpipe train --register` runs it (real MLflow store, real decoded gate
    clips), on models that need no training: one that always answers the first class."""
    import torch

    from pipeline.clips import video_digests
    from pipeline.models.checkpoint import ModelConfig, save_checkpoint
    from pipeline.registry import promote
    from pipeline.tracking import TrackedRun
    from pipeline.train_job import TrainRequest, _register_and_gate, split_data
    from pipeline.training import TrainResult

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 4 groups, half held out: one group selects the epoch, the other (12 clips) is the gate's.
    data = split_data(str(motion_corpus), None, 0.5, 0, gate=True)
    assert len(data.gate) == 12 and not {v.group for v in data.gate} & {v.group for v in data.val}

    def register(trained_on, out: str) -> dict:
        config = ModelConfig("cnn2d_gru32", data.class_names, frames=8, size=32,
                             training_videos=video_digests(trained_on))
        model = config.build()
        with torch.no_grad():  # always the first class: chance and the majority, 3 of 12
            model.head.classifier.weight.zero_()
            model.head.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
        save_checkpoint(model, config, tmp_path / out)
        request = TrainRequest(str(motion_corpus), str(tmp_path / out), arch=config.arch,
                               frames=8, size=32, register=REGISTERED, mlflow_uri=uri)
        tracking = TrackedRun(uri, "gate", out, warn=print)
        said = []
        summary = _register_and_gate(request, tracking, uri,
                                     TrainResult(model, b"", [], 1, 0, "", []), config, data,
                                     said.append)
        tracking.end()
        return {**summary, "said": said, "run": tracking.run_id}

    first = register(data.train, "chance.pt")  # no champion yet, and no better than chance
    assert first["alias"] == "challenger" and first["model_version"] == "1"
    assert first["gate"]["gate_clips"] == 12 and first["gate"]["new_accuracy"] == pytest.approx(0.25)
    assert "no better than chance or the most frequent class" in first["said"][-1]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert "champion" not in client.get_registered_model(REGISTERED).aliases
    tags = client.get_run(first["run"]).data.tags
    assert tags["vidpipe.gate"] == "challenger" and tags["vidpipe.gate_clips"] == "12"

    # A model trained on the gate's videos too has no clean clip to be judged on...
    promoted = register(data.train + data.gate, "on-the-gate.pt")
    assert promoted["alias"] == "challenger" and promoted["gate"]["gate_clips"] == 0
    assert "all 12 gate clips are in this model's training videos" in promoted["gate"]["reason"]
    promote(uri, REGISTERED, promoted["model_version"])  # ...but a user may promote it by hand

    second = register(data.train, "second.pt")  # every gate clip is in the champion's training
    assert second["alias"] == "challenger" and second["gate"]["gate_clips"] == 0
    reason = second["gate"]["reason"]
    assert reason == (f"not promoted: no gate clips to compare on (all 12 gate clips are in "
                      f"champion v{promoted['model_version']}'s training videos)")
    assert client.get_run(second["run"]).data.tags["vidpipe.gate_reason"] == reason
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert str(champion.version) == promoted["model_version"]
