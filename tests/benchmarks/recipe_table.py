"""Does `vidpipe train` with its defaults carry to footage nobody tuned on? Families x workers x seeds.

    .venv/bin/python tests/benchmarks/recipe_table.py [--families ...] [--workers 1 2]
        [--seeds 0 1 2] [--arch ARCH] [--root DIR] [--out results.jsonl]

Every corpus family of pipeline/families.py (made once under --root if missing: 24 training
videos per class in 4 recording groups, 10 test videos per class from photographs, textures or a
colour mode that no training video shows) is trained on as `vidpipe train DATA` would be: a
group-aware split of its training folder holds out one group of four for picking the epoch, then
the default architecture and settings (no flags) train through the same Ray Train engine. The
kept model is then scored on the family's test folder, in the windows `vidpipe classify` would
use (the held-out video accuracy: each video scored by the mean of its windows' probabilities)
and on whole videos (one clip each). Checkpoints are kept in the run folder it prints. Families marked `tuned` were looked at while choosing the
recipe; the others were not (their figures are the honest ones). Prints a JSON line per run
(also appended to --out) and a markdown table: held-out video accuracy, the epoch whose own
validation first reached twice chance, the kept epoch, and training seconds. About 2 minutes a
run on 2 cores. `--arch` measures another architecture (e.g. the previous default) with the
same settings.
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

from pipeline.clips import decode_labelled, to_arrays  # noqa: E402
from pipeline.corpus import read_corpus, split_by_group  # noqa: E402
from pipeline.evaluation import evaluate  # noqa: E402
from pipeline.families import FAMILIES, make_family  # noqa: E402
from pipeline.models import DEFAULT_ARCH, canonical_arch  # noqa: E402
from pipeline.models.checkpoint import ModelConfig, save_checkpoint  # noqa: E402
from pipeline.ray_runtime import ensure_ray, set_verbose  # noqa: E402
from pipeline.training import (RunSpec, TrainSettings, left_chance_epoch, pool_frames,  # noqa: E402
                               train_distributed)

FRAMES, SIZE = 20, 64
PREVIOUS_ARCH = "cnn3dbnmix_gru128"  # the default until 2026-12-06, trained exactly 15 epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arch", default=DEFAULT_ARCH)
    parser.add_argument("--previous-defaults", action="store_true",
                        help=f"the defaults before motion3d: {PREVIOUS_ARCH}, exactly 15 epochs")
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "vidpipe-families"))
    parser.add_argument("--out", default="recipe-table.jsonl", help="JSON lines, appended")
    args = parser.parse_args()
    arch = PREVIOUS_ARCH if args.previous_defaults else canonical_arch(args.arch)
    settings = TrainSettings(min_steps=0) if args.previous_defaults else TrainSettings()
    set_verbose(False)
    ensure_ray()
    work = Path(tempfile.mkdtemp(prefix="vidpipe-recipe-"))
    print(f"runs and checkpoints under {work}", flush=True)
    rows = []
    for family in args.families:
        data = _family_clips(Path(args.root) / family, family)
        for workers in args.workers:
            for seed in args.seeds:
                rows.append(_run(family, data, arch, settings, workers, seed, work))
                print(json.dumps(rows[-1]), flush=True)
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(rows[-1]) + "\n")
    print(markdown(rows))


def _family_clips(root: Path, family: str) -> dict:
    """The family's videos decoded once: training pools (temporal jitter), the same videos at the
    model's frames (for the validation part of each seed's split), and the test set in the
    windows `classify` would cut (the training clips' median span)."""
    if not (root / "test").exists():
        make_family(str(root), family, per_class=24, test_per_class=10, groups=4, seed=2026)
    train_corpus, test_corpus = read_corpus(str(root / "train")), read_corpus(str(root / "test"))
    pools = decode_labelled(train_corpus.videos, pool_frames(FRAMES, TrainSettings()), SIZE)
    clips = decode_labelled(train_corpus.videos, FRAMES, SIZE)
    test = decode_labelled(test_corpus.videos, FRAMES, SIZE, window_seconds=pools.median_seconds)
    whole = decode_labelled(test_corpus.videos, FRAMES, SIZE)
    classes = train_corpus.class_names
    return {"corpus": train_corpus, "classes": classes, "pools": pools, "clips": clips,
            "clip_seconds": pools.median_seconds,
            "test": to_arrays(test.dataset, classes, FRAMES, SIZE),
            "test_whole": to_arrays(whole.dataset, classes, FRAMES, SIZE)}


def _run(family: str, data: dict, arch: str, settings: TrainSettings, workers: int, seed: int,
         work: Path) -> dict:
    settings = TrainSettings(**{**settings.__dict__, "seed": seed})
    train_videos, val_videos = split_by_group(data["corpus"].videos, 0.25, seed)
    train_uris = {video.uri for video in train_videos}
    val_uris = {video.uri for video in val_videos}
    train = data["pools"].dataset.filter(lambda row: row["uri"] in train_uris).materialize()
    val = data["clips"].dataset.filter(lambda row: row["uri"] in val_uris).materialize()
    config = ModelConfig(arch, data["classes"], FRAMES, SIZE, clip_seconds=data["clip_seconds"])
    started = time.perf_counter()
    result = train_distributed(config, train, val, settings,
                               RunSpec(str(work / "runs"), f"{family}-{arch}-{settings.min_steps}-w{workers}-s{seed}",
                                       workers=workers))
    wall = time.perf_counter() - started
    scored = evaluate(result.model, data["classes"], FRAMES, *data["test"])
    whole = evaluate(result.model, data["classes"], FRAMES, *data["test_whole"])
    save_checkpoint(result.model, config, work / f"{family}-{arch}-w{workers}-s{seed}.pt")
    return {"family": family, "tuned": FAMILIES[family].tuned, "arch": arch,
            "min_steps": settings.min_steps, "workers": workers,
            "seed": seed, "heldout_video_accuracy": round(scored.video_accuracy, 4),
            "heldout_clip_accuracy": round(scored.clip_accuracy, 4),
            "heldout_whole_video_accuracy": round(whole.video_accuracy, 4),
            "own_val_accuracy": max(stats.val_accuracy or 0.0 for stats in result.history),
            "left_chance_epoch": left_chance_epoch(result.history, len(data["classes"])),
            "kept_epoch": result.best_epoch, "epochs": len(result.history),
            "train_s": round(sum(stats.seconds or 0.0 for stats in result.history), 1),
            "wall_s": round(wall, 1), "test_videos": scored.videos}


def markdown(rows: list[dict]) -> str:
    lines = ["| family | tuned on | arch | workers | seed | held-out video acc (windows) "
             "| whole videos | left chance (epoch) | kept epoch / run | train s | wall s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['family']} | {'yes' if row['tuned'] else '**no**'} | `{row['arch']}` | "
                     f"{row['workers']} | {row['seed']} | {row['heldout_video_accuracy']:.3f} | "
                     f"{row['heldout_whole_video_accuracy']:.3f} | "
                     f"{row['left_chance_epoch'] or 'never'} | {row['kept_epoch']} / "
                     f"{row['epochs']} | {row['train_s']:.0f} | {row['wall_s']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
