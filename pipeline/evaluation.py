"""Evaluation of a classifier on labelled clips: accuracy, top-5, per-class precision/recall,
confusion matrix, latency, and the plots that go with them.

Clip-level numbers score every sampled clip (one per video, or one per window with
--window-seconds); video-level numbers score each video once, by the mean of its clips'
probabilities. Latency is reported as the paper does, in seconds per frame (model time only, on
this machine's CPU/GPU), and as clips per second.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn

from .errors import InvalidInput
from .models import TOP_K, predict_probs


@dataclass
class Evaluation:
    class_names: list[str]
    clips: int
    videos: int
    clip_accuracy: float
    video_accuracy: float
    top5_accuracy: float  # clip level; top-k with k = min(5, classes)
    per_class: dict[str, dict[str, float]]  # name -> precision, recall, support (clip level)
    confusion: list[list[int]]  # rows: true class, columns: predicted class (clip level)
    seconds_per_frame: float
    clips_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    def pair_accuracy(self, first: str, second: str) -> float:
        """How well the model tells `first` from `second`: accuracy over the clips of either class
        that it assigned to one of the two (0.5 is chance)."""
        a, b = self.class_names.index(first), self.class_names.index(second)
        matrix = np.asarray(self.confusion)
        right = matrix[a, a] + matrix[b, b]
        within = right + matrix[a, b] + matrix[b, a]
        return float(right / within) if within else float("nan")


def evaluate(model: nn.Module, class_names: Sequence[str], frames: int, clips: np.ndarray,
             labels: np.ndarray, video_ids: Sequence[str] | None = None,
             batch_size: int = 16) -> Evaluation:
    """Score `model` on uint8 clips [N, T, H, W, 3] with true label indices [N]."""
    if len(clips) == 0:
        raise InvalidInput("nothing to evaluate: no clips could be decoded")
    started = time.perf_counter()
    probs = predict_probs(model, clips, batch_size)
    seconds = time.perf_counter() - started
    predicted = probs.argmax(1)
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    k = min(TOP_K, num_classes)
    top_k = np.argsort(-probs, axis=1)[:, :k]
    per_class = {}
    for index, name in enumerate(class_names):
        predicted_as = confusion[:, index].sum()
        support = confusion[index].sum()
        per_class[name] = {
            "precision": float(confusion[index, index] / predicted_as) if predicted_as else 0.0,
            "recall": float(confusion[index, index] / support) if support else 0.0,
            "support": int(support),
        }
    video_ids = list(video_ids) if video_ids is not None else [str(i) for i in range(len(clips))]
    video_accuracy, videos = _video_accuracy(probs, labels, video_ids)
    return Evaluation(
        class_names=list(class_names), clips=len(clips), videos=videos,
        clip_accuracy=float((predicted == labels).mean()), video_accuracy=video_accuracy,
        top5_accuracy=float((top_k == labels[:, None]).any(1).mean()),
        per_class=per_class, confusion=confusion.tolist(),
        seconds_per_frame=seconds / (len(clips) * frames), clips_per_s=len(clips) / seconds)


def _video_accuracy(probs: np.ndarray, labels: np.ndarray, video_ids: list[str]) -> tuple[float, int]:
    order = {}
    for row, video in enumerate(video_ids):
        order.setdefault(video, []).append(row)
    correct = [probs[rows].mean(0).argmax() == labels[rows[0]] for rows in order.values()]
    return float(np.mean(correct)), len(order)


def plot_confusion(evaluation: Evaluation, path: str) -> None:
    plt = _pyplot()
    matrix = np.asarray(evaluation.confusion)
    size = max(4.0, 0.6 * len(evaluation.class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(evaluation.class_names))
    axes.set_xticks(ticks, evaluation.class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, evaluation.class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, col), value in np.ndenumerate(matrix):
        axes.text(col, row, str(value), ha="center", va="center",
                  color="white" if value > matrix.max() / 2 else "black")
    axes.set_title(f"clip accuracy {evaluation.clip_accuracy:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_learning_curve(history: Sequence, path: str, kept_epoch: int | None = None) -> None:
    figure = learning_curve_figure(history, kept_epoch)
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)


def learning_curve_figure(history: Sequence, kept_epoch: int | None = None):
    """Loss and accuracy per epoch (train, and validation where measured) on whole-epoch ticks
    (never fractional, however short the run), the kept epoch marked with a dashed line."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [stats.epoch for stats in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(epochs, [s.loss for s in history], marker=".", label="train")
    accuracy_axes.plot(epochs, [s.accuracy for s in history], marker=".", label="train")
    if any(s.val_accuracy is not None for s in history):
        loss_axes.plot(epochs, [s.val_loss for s in history], marker=".", label="validation")
        accuracy_axes.plot(epochs, [s.val_accuracy for s in history], marker=".",
                           label="validation")
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        if kept_epoch is not None:
            axes.axvline(kept_epoch, color="grey", linestyle="--", label=f"kept (epoch {kept_epoch})")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.legend()
    figure.tight_layout()
    return figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on workers or CI
    import matplotlib.pyplot as plt

    return plt


def training_overlap(config, videos) -> int:
    """How many of `videos` (with ETags) the model was trained on, as far as its checkpoint knows
    (older checkpoints record no training videos: 0)."""
    from .clips import video_digests

    return len(set(video_digests(videos)) & set(config.training_videos))


def run_evaluation(data: str, model_ref: str, *, out: str | None = None,
                   window_seconds: float | None = None,
                   mlflow_uri: str | None = None, ray_address: str | None = None,
                   say=print, decoder: str = "pyav") -> dict:
    """`vidpipe evaluate`: decode DATA with the model's own sampling (Ray Data), score it, and
    write evaluation.json and the confusion-matrix PNG to `out` when given."""
    import json
    import os

    from .clips import decode_labelled, to_arrays, with_fingerprints
    from .corpus import read_corpus
    from .model_store import load_model
    from .ray_runtime import ensure_ray

    loaded = load_model(model_ref, mlflow_uri)
    config = loaded.config
    corpus = read_corpus(data)
    unknown = sorted(set(corpus.class_names) - set(config.class_names))
    if unknown:
        raise InvalidInput(f"{data} has classes the model does not know: {', '.join(unknown)}")
    overlap = training_overlap(config, with_fingerprints(corpus.videos))
    if overlap:
        say(f"warning: {overlap} of the {len(corpus.videos)} videos in {data} were used to train "
            f"this model: accuracy on them is flattering; evaluate on held-out data")
    ensure_ray(ray_address)
    decoded = decode_labelled(corpus.videos, config.frames, config.size,
                              window_seconds=config.window_seconds(window_seconds),
                              decoder=decoder)
    for uri, reason in decoded.skipped:
        say(f"skipped {uri}: {reason}")
    clips, labels, uris = to_arrays(decoded.dataset, config.class_names, config.frames, config.size)
    result = evaluate(loaded.model, config.class_names, config.frames, clips, labels, uris)
    say(f"{result.videos} videos, {result.clips} clips: clip accuracy {result.clip_accuracy:.3f}, "
        f"video accuracy {result.video_accuracy:.3f}, top-5 {result.top5_accuracy:.3f}, "
        f"{result.seconds_per_frame * 1000:.3f} ms/frame, {result.clips_per_s:.1f} clips/s")
    summary = {**result.to_dict(), "training_overlap": overlap, "model": model_ref, "model_name": loaded.lineage.model_name,
               "model_version": loaded.lineage.model_version, "skipped": len(decoded.skipped)}
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "evaluation.json"), "w") as handle:
            json.dump(summary, handle, indent=1)
        plot_confusion(result, os.path.join(out, "confusion_matrix.png"))
        summary["out"] = out
        say(f"evaluation.json and confusion_matrix.png written to {out}")
    return summary
