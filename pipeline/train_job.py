"""`vidpipe train` end to end: corpus -> clips (Ray Data) -> Ray Train -> checkpoint -> evaluation
-> MLflow run, registry and the champion/challenger gate.

Order matters for safety: the checkpoint is written to --out before anything talks to the registry,
so an MLflow outage can cost tracking but never the trained model. Rerunning the same command
resumes the same Ray Train run (same storage path and name) and continues the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput
from .clips import (dataset_fingerprint, decode_labelled, to_arrays, video_digests,
                    with_fingerprints)
from .corpus import LabelledVideo, read_corpus, split_by_group
from .evaluation import Evaluation, evaluate, plot_confusion, plot_learning_curve
from .models import DEFAULT_ARCH, count_parameters
from .models.checkpoint import ModelConfig, write_checkpoint_bytes
from .storage import filesystem
from .tracking import (TrackedRun, apply_gate, champion_version, describe_failure,
                       tracking_uri)
from .training import RunSpec, TrainResult, TrainSettings, pool_frames, train_distributed

RUN_MARKER = "vidpipe-run.json"  # in the Ray Train run folder: its MLflow run and what it trains
# Settings a rerun may change and still continue the same run: how long it trains.
RESUMABLE_CHANGES = ("epochs", "min_steps")


@dataclass(frozen=True)
class TrainRequest:
    data: str
    out: str
    val: str | None = None
    arch: str = DEFAULT_ARCH
    settings: TrainSettings = TrainSettings()
    frames: int = 20
    size: int = 64
    val_fraction: float = 0.25
    workers: int = 1
    use_gpu: bool = False
    max_failures: int = 1
    storage_path: str | None = None
    name: str | None = None
    cache: str | None = None
    window_seconds: float | None = None
    register: str | None = None
    experiment: str = "vidpipe-train"
    mlflow_uri: str | None = None
    ray_address: str | None = None


class RegistrationFailed(Exception):
    """Training succeeded but the model could not be registered; the checkpoint is kept."""


@dataclass
class LabelledData:
    train: list[LabelledVideo]
    val: list[LabelledVideo]
    class_names: tuple[str, ...]


def split_data(data: str, val: str | None, val_fraction: float, seed: int) -> LabelledData:
    """Train/validation videos: --val as given, else a group-aware split of DATA."""
    corpus = read_corpus(data)
    if val:
        val_corpus = read_corpus(val)
        names = tuple(sorted(set(corpus.class_names) | set(val_corpus.class_names)))
        return LabelledData(list(corpus.videos), list(val_corpus.videos), names)
    train, held_out = split_by_group(corpus.videos, val_fraction, seed)
    return LabelledData(train, held_out, corpus.class_names)


def run_training(request: TrainRequest, say: Callable[[str], None]) -> dict:
    from .ray_runtime import cluster_has_gpus, ensure_ray

    settings = request.settings
    data = split_data(request.data, request.val, request.val_fraction, settings.seed)
    data.train = with_fingerprints(data.train)
    data.val = with_fingerprints(data.val)
    ensure_ray(request.ray_address)
    if request.use_gpu and not cluster_has_gpus():
        raise InvalidInput("--gpus asked for GPU workers but the Ray cluster has no GPUs")
    train, val = decode_split(data, request.frames, request.size, request.cache,
                              request.window_seconds, say, pool_frames(request.frames, settings))

    fingerprint = dataset_fingerprint(data.train + data.val)
    config = ModelConfig(arch=request.arch, class_names=data.class_names,
                         frames=request.frames, size=request.size,
                         clip_seconds=request.window_seconds or train.median_seconds,
                         dataset_fingerprint=fingerprint,
                         training_videos=video_digests(data.train))
    run = RunSpec(_storage_path(request), name=request.name or _run_name(request, fingerprint),
                  workers=request.workers, use_gpu=request.use_gpu,
                  max_failures=request.max_failures)
    identity = _run_identity(config, settings)
    marker = _read_marker(run)
    _check_resumable(run, marker, identity, started=_run_started(run))
    uri = tracking_uri(request.mlflow_uri)
    tracking = TrackedRun(uri, request.experiment, run.name, lambda m: say(f"warning: {m}"),
                           resume_run_id=marker.get("mlflow_run_id"))
    _write_marker(run, tracking.run_id if tracking.active else None, identity)
    if tracking.active:
        tracking.log_params({
            **settings.__dict__, "arch": config.arch, "frames": config.frames,
            "size": config.size, "workers": run.workers, "dataset_fingerprint": fingerprint,
            "train_clips": train.count, "val_clips": val.count if val else 0,
            "classes": ",".join(config.class_names), "window_seconds": request.window_seconds,
            "parameters": count_parameters(config.build()), "ray_train_run": run.name,
            "clip_seconds": config.clip_seconds})

    say(f"training {config.arch} with {run.workers} worker(s) on {train.count} clips "
        f"(run {run.name} under {run.storage_path})")
    try:
        result = train_distributed(
            config, train.dataset, val.dataset if val else None, settings, run,
            mlflow={"tracking_uri": uri, "run_id": tracking.run_id} if tracking.active else None)
    except BaseException:
        tracking.end(ok=False)
        raise
    write_checkpoint_bytes(result.checkpoint, request.out)
    kept = (f"epoch {result.best_epoch}, the best on validation" if val and val.count
            else f"epoch {result.best_epoch}, the last")
    say(f"checkpoint written to {request.out} ({kept}"
        + (f"; resumed from epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ")"))

    summary = {"checkpoint": request.out, "arch": config.arch, "classes": list(config.class_names),
               "workers": run.workers, "nodes": result.nodes, "train_clips": train.count,
               "val_clips": val.count if val else 0, "ray_train_run": result.run_path,
               "resumed_from_epoch": result.resumed_from_epoch, "best_epoch": result.best_epoch,
               "clip_seconds": config.clip_seconds,
               "epochs": [stats.__dict__ for stats in result.history],
               "mlflow_run_id": tracking.run_id}
    val_arrays, evaluation = None, None
    if val and val.count:
        val_arrays = to_arrays(val.dataset, config.class_names, config.frames, config.size)
        evaluation = evaluate(result.model, config.class_names, config.frames, *val_arrays)
        summary["val_accuracy"] = evaluation.clip_accuracy
        summary["evaluation"] = evaluation.to_dict()
        say(f"validation: clip accuracy {evaluation.clip_accuracy:.3f}, "
            f"video accuracy {evaluation.video_accuracy:.3f}, top-5 {evaluation.top5_accuracy:.3f}")
    summary["report"] = write_report(request.out, config, result, evaluation)
    if tracking.active:
        tracking.log_metrics(_final_metrics(evaluation))
        tracking.log_artifacts(summary["report"])
        summary.update(_register(request, tracking, uri, val_arrays, evaluation, say))
    tracking.end(ok=True)
    if request.register and "model_version" not in summary:
        raise RegistrationFailed(f"trained, but not registered as {request.register} (MLflow "
                                 f"unreachable); the checkpoint is at {request.out}")
    return summary


def decode_split(data: LabelledData, frames: int, size: int, cache: str | None,
                 window_seconds: float | None, say, train_frames: int | None = None):
    """(train, val or None) clip datasets, decoded once or read from the clip cache; every
    undecodable video is named. Training clips get `train_frames` frames over the same span
    (a pool for temporal jitter, training.pool_frames), validation clips the `frames` the
    model sees."""
    say(f"decoding {len(data.train)} training and {len(data.val)} validation videos")

    def decode(videos, count):
        return decode_labelled(videos, count, size, cache, window_seconds)

    train = decode(data.train, train_frames or frames)
    val = decode(data.val, frames) if data.val else None
    for uri, reason in train.skipped + (val.skipped if val else []):
        say(f"skipped {uri}: {reason}")
    if not train.count:
        raise InvalidInput("no training clip could be decoded")
    if cache:
        say(f"clip cache: train {train.cache}, validation {val.cache if val else '-'}")
    return train, val


def write_report(out: str, config: ModelConfig, result: TrainResult,
                 evaluation: Evaluation | None) -> str:
    """Label map, evaluation JSON and plots next to the checkpoint (and logged to MLflow)."""
    directory = os.path.splitext(os.path.abspath(out))[0] + "-report"
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "label_map.json"), "w") as handle:
        json.dump({str(i): name for i, name in enumerate(config.class_names)}, handle, indent=1)
    plot_learning_curve(result.history, os.path.join(directory, "learning_curve.png"))
    if evaluation is not None:
        with open(os.path.join(directory, "evaluation.json"), "w") as handle:
            json.dump(evaluation.to_dict(), handle, indent=1)
        plot_confusion(evaluation, os.path.join(directory, "confusion_matrix.png"))
    return directory


def _register(request: TrainRequest, tracking: TrackedRun, uri: str, val_arrays,
              evaluation: Evaluation | None, say) -> dict:
    """Log the model; with --register, version it and run the champion/challenger gate. An MLflow
    failure here is a warning: the checkpoint is already on disk."""
    from mlflow.exceptions import MlflowException

    try:
        return _register_and_gate(request, tracking, uri, val_arrays, evaluation, say)
    except (MlflowException, OSError) as exc:  # OSError covers requests' connection errors
        say(f"warning: registration failed ({describe_failure(exc)})")
        return {}


def _register_and_gate(request: TrainRequest, tracking: TrackedRun, uri: str, val_arrays,
                       evaluation: Evaluation | None, say) -> dict:
    incumbent = champion_version(uri, request.register) if request.register else None
    version = tracking.log_model(os.path.abspath(request.out), request.register)
    if not request.register or version is None:
        return {}
    new_accuracy = evaluation.clip_accuracy if evaluation else 0.0
    champion_accuracy, reason = None, ""
    if incumbent is not None:
        champion_accuracy, reason = _champion_accuracy(request, uri, incumbent, val_arrays,
                                                       tuple(evaluation.class_names) if evaluation else ())
    decision = apply_gate(uri, request.register, version, new_accuracy, champion_accuracy,
                          incumbent, reason)
    tracking.log_metrics({"gate_new_accuracy": new_accuracy}
                         | ({"gate_champion_accuracy": champion_accuracy}
                            if champion_accuracy is not None else {}))
    tracking.set_tags({"vidpipe.gate": decision.alias, "vidpipe.gate_reason": decision.reason,
                       "vidpipe.registered_version": version})
    say(f"registered {request.register} v{version} as {decision.alias}: {decision.reason}")
    return {"registered_model": request.register, "model_version": version,
            "alias": decision.alias, "gate": decision.__dict__}


def _champion_accuracy(request: TrainRequest, uri: str, version: str, val_arrays,
                       class_names: tuple[str, ...]) -> tuple[float | None, str]:
    """The champion's clip accuracy on the same validation clips; None when not comparable."""
    from .model_store import load_model

    if val_arrays is None:
        return None, "no validation data to compare on"
    champion = load_model(f"models:/{request.register}/{version}", uri)
    if (champion.config.frames, champion.config.size) != (request.frames, request.size):
        return None, (f"champion v{version} samples {champion.config.frames} frames at "
                      f"{champion.config.size}px, not comparable on these clips")
    if set(champion.config.class_names) != set(class_names):
        return None, f"champion v{version} has other classes, not comparable"
    clips, labels, uris = val_arrays
    as_champion = [champion.config.class_names.index(class_names[i]) for i in labels]
    score = evaluate(champion.model, champion.config.class_names, champion.config.frames, clips,
                     np.asarray(as_champion, np.int64), uris)
    return score.clip_accuracy, ""


def _final_metrics(evaluation: Evaluation | None) -> dict:
    if evaluation is None:
        return {}
    return {"final_val_accuracy": evaluation.clip_accuracy,
            "final_video_accuracy": evaluation.video_accuracy,
            "final_top5_accuracy": evaluation.top5_accuracy,
            "seconds_per_frame": evaluation.seconds_per_frame,
            "eval_clips_per_s": evaluation.clips_per_s}


def _storage_path(request: TrainRequest) -> str:
    """Ray Train's storage path: --storage-path, else `ray-train/` beside the checkpoint. A
    multi-node cluster needs shared storage (s3://...) here."""
    return request.storage_path or os.path.join(os.path.dirname(os.path.abspath(request.out)),
                                                "ray-train")


def _run_name(request: TrainRequest, fingerprint: str) -> str:
    """Same command, same name: what lets a rerun resume. Epochs and workers are left out on
    purpose, so a rerun with more epochs or workers continues the run."""
    settings = {k: v for k, v in request.settings.__dict__.items() if k not in RESUMABLE_CHANGES}
    settings = (request.out, request.arch, request.frames, request.size, sorted(settings.items()),
                request.window_seconds, fingerprint)
    digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:10]
    stem = os.path.splitext(os.path.basename(request.out))[0] or "model"
    return f"{stem}-{digest}"


def _run_dir(run: RunSpec) -> str:
    return posixpath.join(run.storage_path.rstrip("/"), run.name)


def _marker_path(run: RunSpec) -> str:
    return posixpath.join(_run_dir(run), RUN_MARKER)


def _run_identity(config: ModelConfig, settings: TrainSettings) -> dict:
    """What a Ray Train run was started with, bar epochs and workers (which a rerun may raise)."""
    return {"model": config.to_dict(),
            "settings": {k: v for k, v in settings.__dict__.items() if k not in RESUMABLE_CHANGES}}


def _check_resumable(run: RunSpec, marker: dict, identity: dict, started: bool = False) -> None:
    """A rerun resumes the run of the same name; refuse when that run was trained on other data,
    classes or settings, so old weights are never continued (or registered) as if new.
    `started`: the run's folder already holds Ray Train state; without an identity in its marker
    (a run left by an older vidpipe, or a marker lost) nothing says what it trained on: refuse."""
    # Both as the marker stores them (JSON: tuples become lists).
    previous = json.loads(json.dumps(marker.get("identity")))
    identity = json.loads(json.dumps(identity))
    if previous == identity:
        return
    if not previous:
        if not started:
            return  # a fresh run
        raise InvalidInput(f"Ray Train run {run.name} exists but does not record what it was "
                           f"trained on; choose another --name (or remove "
                           f"{run.storage_path}/{run.name}) to start afresh")
    differing = sorted({f"{part}.{key}" for part in identity for key in
                        set(identity[part]) | set(previous.get(part, {}))
                        if identity[part].get(key) != previous.get(part, {}).get(key)})
    raise InvalidInput(f"Ray Train run {run.name} exists with other {', '.join(differing)}; "
                     f"choose another --name (or remove {run.storage_path}/{run.name}) to start afresh")


def _run_started(run: RunSpec) -> bool:
    """Whether the run's folder holds anything besides its marker (Ray Train checkpoints, state)."""
    fs, path = filesystem(_run_dir(run))
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(posixpath.basename(entry.rstrip("/")) != RUN_MARKER for entry in entries)


def _read_marker(run: RunSpec) -> dict:
    fs, path = filesystem(_marker_path(run))
    try:
        with fs.open(path, "r") as handle:
            marker = json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _write_marker(run: RunSpec, run_id: str | None, identity: dict) -> None:
    fs, path = filesystem(_marker_path(run))
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "w") as handle:
        json.dump({"mlflow_run_id": run_id, "identity": identity, "written": time.time()}, handle)
