"""Training throughput: Ray Train with 1 and 2 workers next to the plain single-process loop.

    .venv/bin/python tests/benchmarks/bench_training.py [--per-class 24] [--epochs 3]

All engines train the paper's model (cnn3d_gru, 20x64x64, batch 4 per worker, Adam) on the same
decoded clips in the same run. clips/s is training throughput (forward, backward, step,
augmentation) averaged over the epochs after the first (warm-up); for Ray Train the slowest
worker's time counts. Wall time adds everything a user waits for: Ray Train start-up, data
splitting, validation and per-epoch checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from pipeline.clips import decode_labelled, to_arrays  # noqa: E402
from pipeline.corpus import read_corpus, split_by_group  # noqa: E402
from pipeline.models.checkpoint import ModelConfig  # noqa: E402
from pipeline.ray_runtime import ensure_ray  # noqa: E402
from pipeline.synthetic import make_corpus  # noqa: E402
from pipeline.training import (LabelledClips, RunSpec, TrainSettings, fit,  # noqa: E402
                               train_distributed)
from results import record  # noqa: E402


def steady(history) -> float:
    later = history[1:] or history
    return sum(stats.clips_per_s for stats in later) / len(later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidpipe-bench-train-"))
    make_corpus(str(work / "corpus"), per_class=args.per_class, groups=4, seed=5)
    corpus = read_corpus(str(work / "corpus"))
    train_videos, val_videos = split_by_group(corpus.videos, 0.25, 0)
    ensure_ray()
    train = decode_labelled(train_videos, 20, 64)
    val = decode_labelled(val_videos, 20, 64)
    config = ModelConfig("cnn3d_gru128", corpus.class_names)
    settings = TrainSettings(epochs=args.epochs)
    clips, labels, _ = to_arrays(train.dataset, corpus.class_names, 20, 64)
    val_clips, val_labels, _ = to_arrays(val.dataset, corpus.class_names, 20, 64)
    print(f"{len(clips)} training clips, {len(val_clips)} validation clips, {args.epochs} epochs, "
          f"{torch.get_num_threads()} torch threads in this process")

    results = {}
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        started = time.perf_counter()
        _, history = fit(config, LabelledClips(clips, labels), LabelledClips(val_clips, val_labels),
                         settings)
        results[f"single process, {threads} thread(s)"] = (steady(history),
                                                           time.perf_counter() - started)
    for workers in (1, 2):
        started = time.perf_counter()
        result = train_distributed(config, train.dataset, val.dataset, settings,
                                   RunSpec(str(work / "runs"), f"bench-{workers}", workers=workers))
        results[f"Ray Train, {workers} worker(s)"] = (steady(result.history),
                                                      time.perf_counter() - started)

    baseline = results[f"single process, {1} thread(s)"][0]
    print(f"\n| engine | clips/s | vs 1-thread loop | wall s ({args.epochs} epochs) |")
    print("|---|---:|---:|---:|")
    for name, (speed, wall) in results.items():
        print(f"| {name} | {speed:.1f} | {speed / baseline:.2f} | {wall:.1f} |")
    record("Ray Train 1 worker vs plain loop (clips/s)",
           results["Ray Train, 1 worker(s)"][0] / baseline, target=0.9,
           note="steady-state training clips/s; plain loop: fit() in one process, 1 thread")


if __name__ == "__main__":
    main()
