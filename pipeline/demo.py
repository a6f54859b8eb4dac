"""`make demo`: the main job end to end on embedded defaults, one `vidpipe` command per step.

Makes a small synthetic motion corpus, trains the paper's model with two Ray Train workers
(tracked and registered in a local MLflow store), classifies the corpus with the registered
champion through Ray Data into Parquet, and prints where everything went.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from .cli import main as vidpipe


def run(out: str) -> int:
    corpus = os.path.join(out, "corpus")
    checkpoint = os.path.join(out, "model.pt")
    predictions = os.path.join(out, "predictions.parquet")
    mlflow_uri = f"sqlite:///{os.path.abspath(os.path.join(out, 'mlflow.db'))}"
    steps = [
        ["make-corpus", corpus, "--per-class", "24", "--groups", "4", "--seed", "7"],
        ["train", corpus, "--out", checkpoint, "--epochs", "10", "--workers", "2",
         "--register", "vidpipe-demo", "--mlflow-uri", mlflow_uri],
        ["classify", corpus, predictions, "--model", "models:/vidpipe-demo@champion",
         "--mlflow-uri", mlflow_uri],
    ]
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
    print(f"  read them:   python -c \"import duckdb; print(duckdb.sql("
          f"\\\"select label, count(*) from '{predictions}' group by 1\\\"))\"")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output")
    sys.exit(run(parser.parse_args().out))
