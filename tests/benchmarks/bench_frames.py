"""Clip sampling next to a bare ffmpeg decode of the same files, side by side in one run.

    .venv/bin/python tests/benchmarks/bench_frames.py [--long-seconds 80]

For each set of generated videos (160x120, 320x240 and 1280x720; short clips and long videos)
it times, interleaved and best of `--repeat`:
- bare: `ffmpeg -threads 1 -i X -f null -` (decode every frame, nothing else; the issue's yardstick);
- pyav: `sample_clip(X, decoder="pyav")` (20 frames at 64x64, the default backend);
- ffmpeg-cli: `sample_clip(X, decoder="ffmpeg")` (the CLI backend, which decodes every frame).
The ratio is bare seconds / sampling seconds (> 1: sampling is faster than decoding everything).
How much a long video gains depends on its keyframe interval: sampling can skip whole GOPs
only, so long videos are measured with a 2 s GOP (common for streamed and phone video) and with
x264's default 250 frames (10 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from results import record  # noqa: E402
from videos import write_testsrc  # noqa: E402

from pipeline.ffmpeg_binary import ffmpeg_exe  # noqa: E402
from pipeline.frames import probe, sample_clip  # noqa: E402


def bare(files: list[Path]) -> None:
    for f in files:
        subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
                        "-threads", "1", "-i", str(f), "-f", "null", "-"], check=True)


def sampling(decoder: str):
    def run(files: list[Path]) -> None:
        for f in files:
            sample_clip(f, num_frames=20, size=(64, 64), decoder=decoder)
    return run


def measure(label: str, files: list[Path], repeat: int) -> dict[str, float]:
    engines = {"bare": bare, "pyav": sampling("pyav"), "ffmpeg-cli": sampling("ffmpeg")}
    best = {name: float("inf") for name in engines}
    for _ in range(repeat):  # interleaved, so load changes hit every engine alike
        for name, run in engines.items():
            started = time.perf_counter()
            run(files)
            best[name] = min(best[name], time.perf_counter() - started)
    frames = sum(probe(f).num_frames for f in files)
    print(f"{label:36s} {len(files):2d} files {frames:6d} frames | bare {best['bare']:6.2f}s | "
          f"pyav {best['pyav']:6.2f}s ({best['bare'] / best['pyav']:5.2f}x) | "
          f"ffmpeg-cli {best['ffmpeg-cli']:6.2f}s ({best['bare'] / best['ffmpeg-cli']:5.2f}x)")
    return {name: best["bare"] / seconds for name, seconds in best.items() if name != "bare"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-seconds", type=float, default=80)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        short = {
            "160x120": [write_testsrc(root / f"s160_{i}.mp4", 2, size="160x120") for i in range(16)],
            "320x240": [write_testsrc(root / f"s320_{i}.mp4", 2, size="320x240") for i in range(8)],
            "1280x720": [write_testsrc(root / f"s720_{i}.mp4", 2, size="1280x720") for i in range(2)],
        }
        seconds = args.long_seconds
        long = {
            "320x240, 2 s GOP": write_testsrc(root / "l320g.mp4", seconds, size="320x240", keyint=50),
            "1280x720, 2 s GOP": write_testsrc(root / "l720g.mp4", seconds, size="1280x720", keyint=50),
            "320x240, 10 s GOP": write_testsrc(root / "l320.mp4", seconds, size="320x240"),
        }
        print(f"short clips (2 s) and long videos ({seconds:g} s), 20 frames sampled at 64x64")
        ratios = {}
        for size, files in short.items():
            ratios[f"short {size}"] = measure(f"short {size}", files, args.repeat)
        for label, video in long.items():
            ratios[f"long {label}"] = measure(f"long {label}", [video], args.repeat)
    short_all = [r["pyav"] for name, r in ratios.items() if name.startswith("short")]
    record("decode short clips vs bare ffmpeg (pyav, worst size)", min(short_all), target=1.0,
           note="bare ffmpeg -threads 1 decode-all seconds / sample_clip seconds")
    record("decode long 720p 2 s GOP vs bare ffmpeg (pyav)", ratios["long 1280x720, 2 s GOP"]["pyav"],
           target=3.0)
    record("decode long 320x240 2 s GOP vs bare ffmpeg (pyav)",
           ratios["long 320x240, 2 s GOP"]["pyav"], target=3.0)
    record("decode long 320x240 10 s GOP vs bare ffmpeg (pyav)",
           ratios["long 320x240, 10 s GOP"]["pyav"],
           note="targets 4 s apart, keyframes 10 s apart: every GOP is needed")
    record("decode short clips vs bare ffmpeg (ffmpeg-cli backend, worst size)",
           min(r["ffmpeg-cli"] for name, r in ratios.items() if name.startswith("short")))
    record("decode long 320x240 2 s GOP vs bare ffmpeg (ffmpeg-cli backend)",
           ratios["long 320x240, 2 s GOP"]["ffmpeg-cli"])


if __name__ == "__main__":
    main()
