"""`make demo`: the main job end to end on embedded defaults, one `vidpipe` command per step.

Makes a small synthetic motion corpus, trains the default model with the default settings on two
Ray Train workers (tracked and registered in a local MLflow store), classifies the corpus with the
model it registered (version 1 of a fresh store, whichever alias the gate gave it) through Ray
Data into Parquet, and prints where everything went. A second `make demo` starts clean: it says so and removes what the previous one wrote (only the demo's own names under
--out), so that its results never mix with an earlier run's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time

from .cli import main as vidpipe


MODEL_NAME = "vidpipe"  # the name the README's examples use: models:/vidpipe@champion
# Everything a demo run writes under --out (train writes model-report/ and ray-train/ beside the
# checkpoint): removed before the next run, and nothing else is.
OUTPUTS = ("corpus", "model.pt", "model-report", "ray-train", "mlflow.db", "predictions.parquet")


def clean(out: str) -> None:
    earlier = [name for name in OUTPUTS if os.path.lexists(os.path.join(out, name))]
    if not earlier:
        return
    print(f"Removing the previous demo's {', '.join(earlier)} under {out}/ (the demo starts clean).")
    for name in earlier:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def run(out: str, per_class: int = 24, epochs: int | None = None) -> int:
    corpus = os.path.join(out, "corpus")
    checkpoint = os.path.join(out, "model.pt")
    predictions = os.path.join(out, "predictions.parquet")
    mlflow_uri = f"sqlite:///{os.path.abspath(os.path.join(out, 'mlflow.db'))}"
    steps = [
        # 8 recording groups: 6 train, one selects the epoch, one is the champion gate's.
        ["make-corpus", corpus, "--per-class", str(per_class), "--groups", "8", "--seed", "7"],
        ["train", corpus, "--out", checkpoint, *(["--epochs", str(epochs)] if epochs else []),
         "--workers", "2", "--register", MODEL_NAME, "--mlflow-uri", mlflow_uri],
        # The store starts empty, so the model just trained is version 1; a brief training
        # (--epochs 1) stays `challenger`, so the demo does not ask for @champion.
        ["classify", corpus, predictions, "--model", f"models:/{MODEL_NAME}/1",
         "--mlflow-uri", mlflow_uri],
    ]
    clean(out)
    started = time.perf_counter()
    for step in steps:
        print(f"\n$ vidpipe {shlex.join(step)}", flush=True)
        code = vidpipe(step)
        if code != 0:
            return code
    print(f"\nDemo finished in {time.perf_counter() - started:.0f}s.")
    print(f"  corpus:      {os.path.abspath(corpus)}")
    print(f"  checkpoint:  {os.path.abspath(checkpoint)} (plots and evaluation in model-report/)")
    print(f"  MLflow:      {mlflow_uri} (browse: .venv/bin/mlflow ui --backend-store-uri {mlflow_uri})")
    print(f"  predictions: {os.path.abspath(predictions)}")
    print(f"  read them:   .venv/bin/python -c \"import duckdb; print(duckdb.sql("
          f"\\\"select label, count(*) from '{predictions}/*.parquet' group by 1\\\"))\"")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="where everything goes (default: demo-output)")
    parser.add_argument("--per-class", type=int, default=24, help="videos per class (default: 24)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: vidpipe train's)")
    args = parser.parse_args()
    sys.exit(run(args.out, args.per_class, args.epochs))
