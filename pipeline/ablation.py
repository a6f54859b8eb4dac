"""`vidpipe ablation`: the paper's Tables 1-2 and runtime analysis, reproduced on the given data.

Every variant trains on the same decoded clips (decoded once), with the same settings, seed,
split and worker count, through the same Ray Train engine as `vidpipe train`; each gets its own
MLflow run. The result is a markdown table: validation accuracy, parameters, training time and
seconds per frame, next to the paper's accuracy on UCF50 for reference (their protocol, not ours).
"""

from __future__ import annotations

import os
import time

from .clips import dataset_fingerprint, to_arrays, video_digests, with_fingerprints
from .errors import InvalidInput
from .evaluation import evaluate
from .models import count_parameters
from .models.checkpoint import ModelConfig, save_checkpoint
from .redact import redact_uri
from .tracking import TrackedRun, tracking_uri
from .train_job import decode_split, split_data
from .training import RunSpec, left_chance_epoch, pool_frames, train_distributed

# arch -> (the paper's name, its reported UCF50 accuracy in %), in the paper's table order.
PAPER_VARIANTS = {
    "cnn2d_lstm32": ("2D CNN + LSTM 32", 76.60),
    "cnn2d_gru32": ("2D CNN + GRU 32", 85.64),
    "cnn2d_lstm32_gru32": ("2D CNN + LSTM + GRU", 78.72),
    "cnn3d_none": ("3D CNN alone", 86.17),
    "cnn3d_lstm128": ("3D CNN + LSTM 128", 89.36),
    "cnn3d_gru128": ("3D CNN + GRU 128", 89.89),
    "cnn3d_gru32": ("3D CNN + GRU 32", 88.83),
    "cnn3d_lstm32": ("3D CNN + LSTM 32", 88.21),
    "cnn3d_lstm32_gru32": ("3D CNN + LSTM 32 + GRU 32", 23.64),
    "cnn3d_gru32_lstm32": ("3D CNN + GRU 32 + LSTM 32", 61.17),
    "cnn3d_gru128_lstm128": ("3D CNN + GRU 128 + LSTM 128", 87.77),
    "cnn3d_lstm128_gru128": ("3D CNN + LSTM 128 + GRU 128", 23.64),
}
# Our variants, trained beside the paper's under the same settings (no paper figure).
OUR_VARIANTS = {"motion3d_gru128": ("Motion 3D CNN (luma + frame differences, 2x2 grid) + GRU 128 (ours)",
                                    None),
                "cnn3dbnmix_gru128": ("3D CNN + BatchNorm + MixStyle + GRU 128 (ours)", None),
                "cnn3dbn_gru128": ("3D CNN + BatchNorm + GRU 128 (ours)", None),
                "cnn3dgn_gru128": ("3D CNN + GroupNorm + GRU 128 (ours)", None)}
VARIANTS = PAPER_VARIANTS | OUR_VARIANTS


def run_ablation(args, say) -> dict:
    from .ray_runtime import ensure_ray

    archs = args.archs or list(VARIANTS)
    data = split_data(args.data, args.val, args.val_fraction, args.seed)
    if not data.val:
        raise InvalidInput("the ablation needs validation videos (--val, or several groups in DATA)")
    data.train, data.val = with_fingerprints(data.train), with_fingerprints(data.val)
    ensure_ray(args.ray_address)
    settings = args.settings
    train, val = decode_split(data, args.frames, args.size, args.cache, args.window_seconds,
                              say, pool_frames(args.frames, settings))
    val_arrays = to_arrays(val.dataset, data.class_names, args.frames, args.size)
    uri = tracking_uri(args.mlflow_uri)
    stamp = time.strftime("%Y%m%d-%H%M%S")  # a fresh Ray Train run per invocation: timings must be real
    os.makedirs(args.out, exist_ok=True)
    fingerprint = dataset_fingerprint(data.train + data.val)
    rows, tracked = [], 0
    for arch in archs:
        # The same lineage as `vidpipe train` writes: a variant's checkpoint classifies in the
        # windows it was trained on and knows its training videos (evaluate's overlap warning).
        config = ModelConfig(arch=arch, class_names=data.class_names, frames=args.frames,
                             size=args.size,
                             clip_seconds=args.window_seconds or train.median_seconds,
                             dataset_fingerprint=fingerprint,
                             training_videos=video_digests(data.train))
        run = RunSpec(os.path.abspath(os.path.join(args.out, "ray-train")), f"{arch}-{stamp}",
                      workers=args.workers, use_gpu=args.gpus)
        tracking = TrackedRun(uri, args.experiment, arch, lambda m: say(f"warning: {m}"))
        say(f"[{len(rows) + 1}/{len(archs)}] training {arch}")
        result = train_distributed(
            config, train.dataset, val.dataset, settings, run,
            mlflow={"tracking_uri": uri, "run_id": tracking.run_id} if tracking.active else None)
        scored = evaluate(result.model, data.class_names, args.frames, *val_arrays)
        paper_name, paper_accuracy = VARIANTS.get(arch, (arch, None))
        left = left_chance_epoch(result.history, len(data.class_names))
        row = {"arch": arch, "paper_name": paper_name, "paper_accuracy": paper_accuracy,
               "val_accuracy": scored.clip_accuracy, "best_epoch": result.best_epoch,
               "left_chance_epoch": left, "parameters": count_parameters(result.model),
               "train_s": sum(stats.seconds or 0.0 for stats in result.history),
               "seconds_per_frame": scored.seconds_per_frame}
        rows.append(row)
        save_checkpoint(result.model, config, os.path.join(args.out, f"{arch}.pt"))
        tracking.log_params({**settings.__dict__, "arch": arch, "frames": args.frames,
                             "size": args.size, "workers": args.workers,
                             "dataset_fingerprint": fingerprint})
        tracking.log_metrics({key: row[key] for key in
                              ("val_accuracy", "parameters", "train_s", "seconds_per_frame")})
        tracking.end()
        tracked += tracking.active
    table = markdown_table(rows, len(data.class_names), args.epochs or "default", args.workers)
    with open(os.path.join(args.out, "ablation.md"), "w") as handle:
        handle.write(table + "\n")
    say(f"wrote the table (ablation.md), one checkpoint per variant ({len(rows)} ARCH.pt files) "
        f"and their Ray Train runs (ray-train/) to {args.out}/")
    if tracked:
        say(f"tracked as {tracked} MLflow run(s) of experiment {args.experiment} in {redact_uri(uri)}")
    return {"rows": rows, "table": table, "out": args.out}


def markdown_table(rows: list[dict], classes: int, epochs: int | str, workers: int) -> str:
    lines = [
        f"Validation accuracy on the given data ({classes} classes, chance {1 / classes:.1%}), "
        f"{epochs} epochs, {workers} Ray Train worker(s); 'left chance': the first epoch with "
        f"validation accuracy >= twice chance; s/frame is model time per input frame.",
        "",
        "| model | arch | val accuracy | left chance (epoch) | params | train time (s) | s/frame "
        "| paper (UCF50) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        paper = f"{row['paper_accuracy']:.2f}%" if row["paper_accuracy"] is not None else "-"
        left = row["left_chance_epoch"] or "never"
        lines.append(f"| {row['paper_name']} | `{row['arch']}` | {row['val_accuracy']:.1%} | "
                     f"{left} | {row['parameters']:,} | {row['train_s']:.1f} | "
                     f"{row['seconds_per_frame']:.2e} | {paper} |")
    return "\n".join(lines)
