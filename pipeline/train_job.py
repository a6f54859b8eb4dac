"""`vidpipe train` end to end: corpus -> clips (Ray Data) -> Ray Train -> checkpoint -> evaluation
-> MLflow run, registry and the champion/challenger gate.

The held-out validation groups are split in two: the selection part picks the kept epoch and is
what the run reports as validation; the gate part is scored only by the champion gate, so the
gate never compares on clips that chose the challenger's epoch (or that either model trained on).

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
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInput, RegistrationFailed
from .clips import (dataset_fingerprint, decode_labelled, to_arrays, video_digests,
                    with_fingerprints)
from .corpus import LabelledVideo, read_corpus, read_labels, split_by_group
from .evaluation import Evaluation, evaluate, plot_confusion, plot_learning_curve
from .models import DEFAULT_ARCH, count_parameters
from .models.checkpoint import ModelConfig, write_checkpoint_bytes
from .redact import redact_uri
from .storage import filesystem
from .tracking import (GateDecision, TrackedRun, apply_gate, baseline_accuracy,
                       champion_version, decide_gate, describe_failure, tracking_uri)
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
    labels: str | None = None  # a filled labelling manifest (corpus.read_labels), training only
    register: str | None = None
    experiment: str = "vidpipe-train"
    mlflow_uri: str | None = None
    ray_address: str | None = None


@dataclass
class LabelledData:
    train: list[LabelledVideo]
    val: list[LabelledVideo]  # epoch selection and the reported validation
    class_names: tuple[str, ...]
    gate: list[LabelledVideo] = field(default_factory=list)  # only the champion gate scores these
    no_gate: str = ""  # why `gate` is empty


GATE_SHARE = 0.5  # of the held-out recording groups: the gate's, the rest select the epoch


def split_data(data: str, val: str | None, val_fraction: float, seed: int,
               gate: bool = False) -> LabelledData:
    """Train/validation videos: --val as given, else a group-aware split of DATA. `gate`: hold
    part of the validation groups out for the champion gate (split_selection_and_gate)."""
    corpus = read_corpus(data)
    if val:
        val_corpus = read_corpus(val)
        names = tuple(sorted(set(corpus.class_names) | set(val_corpus.class_names)))
        data = LabelledData(list(corpus.videos), list(val_corpus.videos), names)
    else:
        train, held_out = split_by_group(corpus.videos, val_fraction, seed)
        data = LabelledData(train, held_out, corpus.class_names)
    if gate:
        data.val, data.gate, data.no_gate = split_selection_and_gate(data.val, seed)
    return data


def add_labels(data: LabelledData, labels: str, say: Callable[[str], None]) -> int:
    """Add the labelled segments of a filled manifest to the training videos; how many. They
    train only: validation and the champion gate stay the corpus's held-out groups, comparable
    with earlier models. A segment of a held-out video is left out (it would leak into them)."""
    read = read_labels(labels, data.class_names)
    held_out = {video.uri for video in data.val + data.gate}
    added = [video for video in read.videos if video.uri not in held_out]
    if read.unlabelled:
        say(f"labels: skipped {read.unlabelled} row(s) of {labels} with no label yet")
    if len(added) < len(read.videos):
        say(f"labels: skipped {len(read.videos) - len(added)} segment(s) of videos held out "
            f"for validation")
    if not added:
        raise InvalidInput(f"no labelled segment to train on in {labels}")
    data.train = data.train + added
    say(f"labels: {len(added)} labelled segment(s) from {labels} added to the training videos")
    return len(added)


def split_selection_and_gate(val: list[LabelledVideo], seed: int
                             ) -> tuple[list[LabelledVideo], list[LabelledVideo], str]:
    """(selection, gate, why the gate is empty): validation videos split by recording group, no
    group on both sides, GATE_SHARE of the groups to the gate. With fewer than two groups nothing
    can be held out cleanly: all of them select the epoch and the gate has none."""
    groups = {video.group for video in val}
    if len(groups) < 2:
        return list(val), [], (f"the validation data has {len(groups)} recording group(s); the "
                               f"gate needs a group of its own besides the epoch selection's")
    selection, gate = split_by_group(val, GATE_SHARE, seed)
    return selection, gate, ""


def run_training(request: TrainRequest, say: Callable[[str], None]) -> dict:
    from .ray_runtime import cluster_has_gpus, ensure_ray

    settings = request.settings
    data = split_data(request.data, request.val, request.val_fraction, settings.seed, gate=True)
    labelled = add_labels(data, request.labels, say) if request.labels else 0
    data.train = with_fingerprints(data.train)
    data.val = with_fingerprints(data.val)
    data.gate = with_fingerprints(data.gate)
    ensure_ray(request.ray_address)
    if request.use_gpu and not cluster_has_gpus():
        raise InvalidInput("--gpus asked for GPU workers but the Ray cluster has no GPUs")
    train, val = decode_split(data, request.frames, request.size, request.cache,
                              request.window_seconds, say, pool_frames(request.frames, settings))

    fingerprint = dataset_fingerprint(data.train + data.val + data.gate)
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
            "gate_videos": len(data.gate),
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
               "labelled_segments": labelled, "dataset_fingerprint": fingerprint,
               "val_clips": val.count if val else 0, "gate_videos": len(data.gate),
               "ray_train_run": result.run_path,
               "resumed_from_epoch": result.resumed_from_epoch, "best_epoch": result.best_epoch,
               "clip_seconds": config.clip_seconds,
               "epochs": [stats.__dict__ for stats in result.history],
               "mlflow_run_id": tracking.run_id}
    evaluation = None
    if val and val.count:
        val_arrays = to_arrays(val.dataset, config.class_names, config.frames, config.size)
        evaluation = evaluate(result.model, config.class_names, config.frames, *val_arrays)
        summary["val_accuracy"] = evaluation.clip_accuracy
        summary["evaluation"] = evaluation.to_dict()
        say(f"validation: clip accuracy {evaluation.clip_accuracy:.3f}, "
            f"video accuracy {evaluation.video_accuracy:.3f}, top-5 {evaluation.top5_accuracy:.3f}")
    summary["report"] = write_report(request.out, config, result, evaluation)
    say(f"report written to {summary['report']}/ (learning curve, label map"
        + (", evaluation.json, confusion matrix)" if evaluation is not None else ")"))
    if tracking.active:
        tracking.log_metrics(_final_metrics(evaluation))
        tracking.log_artifacts(summary["report"])
        summary.update(_register(request, tracking, uri, result, config, data, say))
    tracking.end(ok=True)
    if tracking.active:
        say(describe_tracking(tracking))
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
    plot_learning_curve(result.history, os.path.join(directory, "learning_curve.png"),
                        kept_epoch=result.best_epoch)
    if evaluation is not None:
        with open(os.path.join(directory, "evaluation.json"), "w") as handle:
            json.dump(evaluation.to_dict(), handle, indent=1)
        plot_confusion(evaluation, os.path.join(directory, "confusion_matrix.png"))
    return directory


def describe_tracking(tracking: TrackedRun) -> str:
    """Where a run's MLflow records went: the store, and its artifacts (a local store keeps them
    in ./mlruns, a folder the user did not name)."""
    try:
        artifacts = tracking.client.get_run(tracking.run_id).info.artifact_uri
    except Exception:  # an outage after the run ended costs only this detail
        artifacts = None
    return (f"tracked as MLflow run {tracking.run_id} in {redact_uri(tracking.uri)}"
            + (f" (artifacts: {redact_uri(artifacts)})" if artifacts else ""))


def _register(request: TrainRequest, tracking: TrackedRun, uri: str, result: TrainResult,
              config: ModelConfig, data: LabelledData, say) -> dict:
    """Log the model; with --register, version it and run the champion/challenger gate. An MLflow
    failure here is a warning: the checkpoint is already on disk."""
    from mlflow.exceptions import MlflowException

    try:
        return _register_and_gate(request, tracking, uri, result, config, data, say)
    except (MlflowException, OSError) as exc:  # OSError covers requests' connection errors
        say(f"warning: registration failed ({describe_failure(exc)})")
        return {}


@dataclass
class GateClips:
    """Decoded gate clips: uint8 [N, T, H, W, 3], label indices in the new model's classes, and
    per clip its video's URI and digest (clips.video_digests: what checkpoints list of their
    training videos). `why_none`: why there are none, when there are none."""

    clips: np.ndarray
    labels: np.ndarray
    uris: list[str]
    digests: list[str]
    why_none: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def without(self, trained_on: set[str], whose: str) -> GateClips:
        """The clips whose videos are not in `trained_on` (a model's training videos)."""
        keep = [i for i, digest in enumerate(self.digests) if digest not in trained_on]
        why = self.why_none
        if len(self) and not keep:
            why = f"all {len(self)} gate clips are in {whose}'s training videos"
        return GateClips(self.clips[keep], self.labels[keep], [self.uris[i] for i in keep],
                         [self.digests[i] for i in keep], why)


def decode_gate(data: LabelledData, config: ModelConfig, request: TrainRequest) -> GateClips:
    """The gate's clips, decoded as validation clips are (the model's frames, no pool)."""
    empty = GateClips(np.zeros((0, config.frames, config.size, config.size, 3), np.uint8),
                      np.zeros(0, np.int64), [], [], data.no_gate)
    if not data.gate:
        return empty
    decoded = decode_labelled(data.gate, config.frames, config.size, request.cache,
                              request.window_seconds)
    if not decoded.count:
        empty.why_none = f"none of the {len(data.gate)} gate videos could be decoded"
        return empty
    clips, labels, uris = to_arrays(decoded.dataset, config.class_names, config.frames,
                                    config.size)
    digest_of = {video.uri: video_digests([video])[0] for video in data.gate}
    return GateClips(clips, labels, uris, [digest_of[uri] for uri in uris])


def _register_and_gate(request: TrainRequest, tracking: TrackedRun, uri: str,
                       result: TrainResult, config: ModelConfig, data: LabelledData,
                       say) -> dict:
    incumbent = champion_version(uri, request.register) if request.register else None
    version = tracking.log_model(os.path.abspath(request.out), request.register)
    if not request.register or version is None:
        return {}
    gate = decode_gate(data, config, request).without(set(config.training_videos), "this model")
    decision = _gate(request, uri, incumbent, result, config, gate)
    apply_gate(uri, request.register, version, decision)
    tracking.log_metrics({"gate_clips": decision.gate_clips}
                         | {f"gate_{name}_accuracy": value for name, value in (
                             ("new", decision.new_accuracy), ("baseline", decision.baseline_accuracy),
                             ("champion", decision.champion_accuracy)) if value is not None})
    tracking.set_tags({"vidpipe.gate": decision.alias, "vidpipe.gate_reason": decision.reason,
                       "vidpipe.gate_clips": decision.gate_clips,
                       "vidpipe.registered_version": version})
    say(f"registered {request.register} v{version} as {decision.alias}: {decision.reason}")
    return {"registered_model": request.register, "model_version": version,
            "alias": decision.alias, "gate": decision.__dict__}


def _gate(request: TrainRequest, uri: str, incumbent: str | None, result: TrainResult,
          config: ModelConfig, gate: GateClips) -> GateDecision:
    """Score the new model, the baselines and the champion on the gate clips that the champion
    did not train on either, and decide."""
    from .model_store import load_model

    champion, incomparable = None, ""
    if incumbent is not None:
        champion = load_model(f"models:/{request.register}/{incumbent}", uri)
        incomparable = _incomparable(champion.config, config, incumbent)
        if not incomparable:
            gate = gate.without(set(champion.config.training_videos), f"champion v{incumbent}")
    if not len(gate):
        return decide_gate(0, None, None, incumbent, None, gate.why_none)
    new_accuracy = _accuracy(result.model, config, gate)
    baseline = baseline_accuracy(gate.labels, config.num_classes)
    champion_accuracy = None
    if champion is not None and not incomparable:
        as_champion = GateClips(gate.clips, np.asarray(
            [champion.config.class_names.index(config.class_names[i]) for i in gate.labels],
            np.int64), gate.uris, gate.digests)
        champion_accuracy = _accuracy(champion.model, champion.config, as_champion)
    return decide_gate(len(gate), new_accuracy, baseline, incumbent, champion_accuracy,
                       incomparable)


def _incomparable(champion: ModelConfig, new: ModelConfig, version: str) -> str:
    """Why champion `version` cannot be scored on the new model's gate clips ("" if it can)."""
    if (champion.frames, champion.size) != (new.frames, new.size):
        return (f"champion v{version} samples {champion.frames} frames at {champion.size}px, "
                f"not comparable on these clips")
    if set(champion.class_names) != set(new.class_names):
        return f"champion v{version} has other classes, not comparable"
    if not champion.training_videos:
        return (f"champion v{version} does not record its training videos, so clean gate "
                f"clips cannot be chosen")
    return ""


def _accuracy(model, config: ModelConfig, gate: GateClips) -> float:
    return evaluate(model, config.class_names, config.frames, gate.clips, gate.labels,
                    gate.uris).clip_accuracy


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
