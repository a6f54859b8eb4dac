"""Does `vidpipe train` learn with its defaults? Workers x seeds on a content-split corpus.

    .venv/bin/python tests/benchmarks/recipe_table.py [--corpus DIR] [--epochs 15] [--seeds 0 1 2]

The corpus (made once under --corpus if missing) has seven camera motions; validation videos
show textures of another family than any training video (`make-corpus --content-split`), so
the score measures motion, not appearance. Every run trains the default architecture with the
default settings (no --lr) through the same Ray Train engine as `vidpipe train`, on clips
decoded once, and is tracked in MLflow (learning curves under the `vidpipe-recipe` experiment).
Prints one row per run: the first epoch whose validation accuracy reached twice chance, the
best validation accuracy (the epoch `vidpipe train` keeps) and the last epoch's. About 25
minutes on 2 cores. Takes no flags that change the recipe: it measures the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.clips import decode_labelled  # noqa: E402
from pipeline.corpus import read_corpus  # noqa: E402
from pipeline.models import DEFAULT_ARCH  # noqa: E402
from pipeline.models.checkpoint import ModelConfig  # noqa: E402
from pipeline.ray_runtime import ensure_ray, set_verbose  # noqa: E402
from pipeline.training import RunSpec, TrainSettings, pool_frames, train_distributed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "vidpipe-recipe-corpus"))
    parser.add_argument("--epochs", type=int, default=TrainSettings().epochs)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mlflow-uri", default=None, help="default: a store in a temp folder")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / "val").exists():
        from pipeline.synthetic import CAMERA_CLASSES, make_corpus

        make_corpus(str(corpus), CAMERA_CLASSES, per_class=24, groups=4, seed=2026,
                    content_split=True, val_per_class=10)
    train_videos, val_videos = read_corpus(str(corpus / "train")), read_corpus(str(corpus / "val"))
    classes = train_videos.class_names
    set_verbose(False)
    ensure_ray()
    train = decode_labelled(train_videos.videos, pool_frames(20, TrainSettings()), 64)
    val = decode_labelled(val_videos.videos, 20, 64)
    work = Path(tempfile.mkdtemp(prefix="vidpipe-recipe-"))
    uri = args.mlflow_uri or f"sqlite:///{work / 'mlflow.db'}"
    print(f"{DEFAULT_ARCH}, {len(classes)} classes, {train.count} training / {val.count} validation "
          f"clips (other textures), {args.epochs} epochs; MLflow: {uri}", flush=True)
    rows = []
    for workers in args.workers:
        for seed in args.seeds:
            started = time.perf_counter()
            settings = TrainSettings(epochs=args.epochs, seed=seed)
            tracked = _mlflow_run(uri, f"{DEFAULT_ARCH} w{workers} s{seed}", workers, settings)
            result = train_distributed(
                ModelConfig(DEFAULT_ARCH, classes), train.dataset, val.dataset, settings,
                RunSpec(str(work / "runs"), f"w{workers}-s{seed}", workers=workers), mlflow=tracked)
            _end_run(tracked)
            curve = [stats.val_accuracy for stats in result.history]
            left = next((i + 1 for i, acc in enumerate(curve) if acc >= 2 / len(classes)), None)
            rows.append({"workers": workers, "seed": seed, "left_chance_epoch": left,
                         "best_val_accuracy": max(curve), "final_val_accuracy": curve[-1],
                         "wall_s": round(time.perf_counter() - started, 1), "curve": curve})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| workers | seed | left chance (epoch) | best val acc (kept) | last epoch val acc |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['workers']} | {row['seed']} | {row['left_chance_epoch'] or 'never'} | "
              f"{row['best_val_accuracy']:.3f} | {row['final_val_accuracy']:.3f} |")


def _mlflow_run(uri: str, name: str, workers: int, settings: TrainSettings) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vidpipe-recipe")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("vidpipe-recipe"))
    run = client.create_run(experiment_id, run_name=name)
    for key, value in {**settings.__dict__, "workers": workers}.items():
        client.log_param(run.info.run_id, key, value)
    return {"tracking_uri": uri, "run_id": run.info.run_id}


def _end_run(tracked: dict) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracked["tracking_uri"]).set_terminated(tracked["run_id"])


if __name__ == "__main__":
    main()
