"""Model speed: achieved GFLOP/s of the forward pass next to a float32 matmul, same threads.

    .venv/bin/python tests/benchmarks/bench_model.py [--threads 1] [--arch cnn3d_gru]

FLOPs are counted from the layers by torch.utils.flop_counter (convolutions and matrix products;
2 per multiply-add; the GRU's recurrences are not counted, so the figure is a lower bound). The
yardstick is a square float32 matmul at the same thread count (what the CPU's BLAS reaches).
Variants tried, each checked against the plain eager model (max |probability difference|):
inference_mode, channels_last_3d memory format, torch.compile, batch sizes 1 to 32, and
`models.for_inference` (what classify runs: BatchNorm folded into the convolutions,
channels-last-3d, pairwise-maximum pooling and in-place ReLU when no gradient is recorded). The
classifier actors run one thread each (inference.ClassifierActor), so 1 thread is the default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from results import record  # noqa: E402

from pipeline.models import CPU_MAX_BATCH, build_model, for_inference  # noqa: E402


def interleaved_best(runs: dict, repeat: int) -> dict[str, float]:
    """Best seconds of each run, timed round-robin so that load changes on a shared machine hit
    every variant alike; one untimed warm-up call each (allocations, oneDNN primitives)."""
    for run in runs.values():
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def forward_flops(model, clips) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(clips)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", default="cnn3d_gru")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (off by default: on the shared 2-core "
                             "machine its compilation did not finish within 10 minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.arch, 4).eval()
    clips = torch.rand(32, 3, 20, 64, 64)
    flops_per_clip = forward_flops(model, clips[:4]) / 4
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)

    def eager(batch):
        with torch.no_grad():
            return model(batch)

    def inference(batch):
        with torch.inference_mode():
            return model(batch)

    channels_last = build_model(args.arch, 4).eval()
    channels_last.load_state_dict(model.state_dict())
    channels_last = channels_last.to(memory_format=torch.channels_last_3d)

    def last(batch):
        with torch.inference_mode():
            return channels_last(batch.contiguous(memory_format=torch.channels_last_3d))

    fast = for_inference(model)  # what classify runs: BatchNorm folded, channels-last-3d

    def served(batch):
        with torch.inference_mode():
            return fast(batch)

    variants = {"no_grad": eager, "inference_mode": inference, "channels_last_3d": last,
                "for_inference": served}
    if args.compile:
        compiled = torch.compile(model)

        def compiled_run(batch):
            with torch.inference_mode():
                return compiled(batch)

        variants["torch.compile"] = compiled_run
    runs = {"matmul": lambda: a @ b}
    for name, fn in variants.items():
        runs[f"{name}, batch 16"] = (lambda fn=fn: fn(clips[:16]))
    for batch in (1, 2, 4, 8, 32):
        runs[f"inference_mode, batch {batch}"] = (lambda batch=batch: inference(clips[:batch]))
    for batch in (2, 4):
        runs[f"for_inference, batch {batch}"] = (lambda batch=batch: served(clips[:batch]))
    best = interleaved_best(runs, args.repeat)
    matmul = 2 * n ** 3 / best.pop("matmul") / 1e9
    print(f"{args.arch}: {flops_per_clip / 1e9:.3f} GFLOP per clip (20x64x64, flop_counter); "
          f"float32 matmul {n}^2 at {args.threads} thread(s): {matmul:.1f} GFLOP/s")
    with torch.inference_mode():
        reference = torch.softmax(model(clips[:16]), 1)
    gflops = {}
    for name, seconds in best.items():
        batch = int(name.rsplit(" ", 1)[1])
        gflops[name] = flops_per_clip * batch / seconds / 1e9
        diff = ""
        if batch == 16:
            variant = variants[name.split(",")[0]]
            with torch.inference_mode():
                diff = (f"max |dp| vs eager "
                        f"{float((torch.softmax(variant(clips[:16]), 1) - reference).abs().max()):.1e}")
        print(f"{name:32s}: {batch / seconds:7.1f} clips/s {gflops[name]:6.2f} GFLOP/s "
              f"({gflops[name] / matmul:.2f} of matmul) {diff}")
    fastest = max(gflops, key=gflops.get)
    print(f"fastest: {fastest}")
    record(f"model vs matmul ({args.arch}, {args.threads} thread, inference_mode, batch 16)",
           gflops["inference_mode, batch 16"] / matmul, target=0.6,
           note="forward GFLOP/s (flop_counter) / float32 1024^2 matmul GFLOP/s, same threads")
    record(f"model vs matmul ({args.arch}, {args.threads} thread, fastest: {fastest})",
           gflops[fastest] / matmul, target=0.6)
    record(f"model vs matmul ({args.arch}, {args.threads} thread, as classify runs it: "
           f"for_inference, batch {CPU_MAX_BATCH})",
           gflops[f"for_inference, batch {CPU_MAX_BATCH}"] / matmul, target=0.6)


if __name__ == "__main__":
    main()
