"""How should the learning rate follow the global batch? Linear vs square-root scaling, measured.

    .venv/bin/python tests/benchmarks/lr_scaling.py [--family photo-camera] [--batches 4 8 16 32 64]
        [--seeds 0] [--root DIR]

`vidpipe train` scales its peak learning rate with the global batch (batch size x workers) from
0.001 at 4 clips. A global batch of B on W workers is, for the optimizer, one step over B clips,
so this runs the single-process loop (training.fit, the same recipe as the Ray Train engine)
with a batch of B clips, for each rule: linear (peak 0.001 x B / 4), square root
(0.001 x sqrt(B / 4)) and capped (the default, training.lr_scale: linear up to 16 clips, then
0.004). Everything else is the defaults, including the minimum of
TrainSettings.min_steps optimizer steps, so a large batch also trains for more epochs. It
reports the held-out video accuracy (the family's test folder, whole videos) of the kept epoch,
the kept epoch and the seconds. BatchNorm sees the whole batch here, where W workers each
normalise over B / W clips: the rule is what is measured, not DDP. About 25 minutes on 2 cores
for the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.corpus import read_corpus, split_by_group  # noqa: E402
from pipeline.evaluation import evaluate  # noqa: E402
from pipeline.families import FAMILIES, make_family  # noqa: E402
from pipeline.frames import sample_clip  # noqa: E402
from pipeline.models import DEFAULT_ARCH  # noqa: E402
from pipeline.models.checkpoint import ModelConfig  # noqa: E402
from pipeline.training import (REFERENCE_BATCH, LabelledClips, TrainSettings, fit,  # noqa: E402
                               lr_scale, pool_frames)

FRAMES, SIZE = 20, 64
RULES = {"linear": lambda batch: batch / REFERENCE_BATCH,
         "sqrt": lambda batch: math.sqrt(batch / REFERENCE_BATCH),
         "capped": lr_scale}  # the default: linear to 16 clips, flat beyond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="photo-camera", choices=list(FAMILIES))
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--min-steps", type=int, default=TrainSettings().min_steps,
                        help="optimizer steps at least (default: the training default)")
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "vidpipe-families"))
    args = parser.parse_args()
    root = Path(args.root) / args.family
    if not (root / "test").exists():
        make_family(str(root), args.family, per_class=24, test_per_class=10, seed=2026)
    corpus, test = read_corpus(str(root / "train")), read_corpus(str(root / "test"))
    classes = corpus.class_names
    rows = []
    for seed in args.seeds:
        train_videos, val_videos = split_by_group(corpus.videos, 0.25, seed)
        train = _decode(train_videos, classes, pool_frames(FRAMES, TrainSettings()))
        val = _decode(val_videos, classes, FRAMES)
        held_out = _decode(test.videos, classes, FRAMES)
        for batch in args.batches:
            for rule in args.rules:
                if batch == REFERENCE_BATCH and rule != args.rules[0]:
                    continue  # every rule gives the reference batch the same learning rate
                # Schedule scales `lr` by lr_scale(batch); this `lr` makes its peak the rule's.
                peak = TrainSettings().lr * RULES[rule](batch)
                settings = TrainSettings(batch_size=batch, lr=peak / lr_scale(batch),
                                         seed=seed, min_steps=args.min_steps)
                started = time.perf_counter()
                model, history = fit(ModelConfig(DEFAULT_ARCH, classes, FRAMES, SIZE), train, val,
                                     settings)
                scored = evaluate(model, classes, FRAMES, held_out.clips, held_out.labels)
                kept = max(history, key=lambda e: (e.val_accuracy, -e.val_loss, e.epoch))
                rows.append({"family": args.family, "global_batch": batch, "rule": rule,
                             "min_steps": args.min_steps,
                             "peak_lr": peak, "seed": seed, "epochs": len(history),
                             "kept_epoch": kept.epoch, "own_val_accuracy": kept.val_accuracy,
                             "heldout_video_accuracy": round(scored.video_accuracy, 4),
                             "seconds": round(time.perf_counter() - started, 1)})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| global batch | rule | peak lr | seed | epochs | kept epoch | own val | held-out video acc "
          "| s |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['global_batch']} | {row['rule']} | {row['peak_lr']:.4g} | {row['seed']} | "
              f"{row['epochs']} | {row['kept_epoch']} | {row['own_val_accuracy']:.3f} | "
              f"{row['heldout_video_accuracy']:.3f} | {row['seconds']:.0f} |")


def _decode(videos, classes, frames: int) -> LabelledClips:
    with ProcessPoolExecutor(2) as pool:
        clips = list(pool.map(_sample, [(video.uri, frames) for video in videos]))
    return LabelledClips(np.stack(clips), np.asarray([classes.index(v.label) for v in videos]))


def _sample(job: tuple[str, int]) -> np.ndarray:
    uri, frames = job
    return sample_clip(uri, num_frames=frames, size=(SIZE, SIZE))


if __name__ == "__main__":
    main()
