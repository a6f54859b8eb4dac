"""Frame sampling speed next to a bare ffmpeg decode of the same files, on this machine, in one run.

    .venv/bin/python tests/benchmarks/bench_frames.py

Prints decoded frames/s for `sample_clip` (decode + scale to 64x64 + RGB + pipe + sampling) and for
`ffmpeg -threads 1 -i X -f null -` (decode only), and their ratio.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from videos import write_testsrc  # noqa: E402

from pipeline.frames import ffmpeg_exe, probe, sample_clip  # noqa: E402
from pipeline.synthetic import make_corpus  # noqa: E402


def measure(label: str, files: list[Path]) -> None:
    frames = sum(probe(f).num_frames for f in files)
    started = time.perf_counter()
    for f in files:
        sample_clip(f, num_frames=20, size=(64, 64))
    ours = frames / (time.perf_counter() - started)
    started = time.perf_counter()
    for f in files:
        subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
                        "-threads", "1", "-i", str(f), "-f", "null", "-"], check=True)
    bare = frames / (time.perf_counter() - started)
    print(f"{label:34s} {len(files):3d} files {frames:6d} frames | sample_clip {ours:7.0f} frames/s"
          f" | bare ffmpeg decode {bare:7.0f} frames/s | ratio {ours / bare:.2f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = [Path(u.removeprefix("file://")) for u in
                  make_corpus(str(root / "corpus"), per_class=10, seed=1)]
        measure("synthetic corpus (<=160x120, ~2s)", corpus)
        wide = [write_testsrc(root / f"wide{i}.mp4", 5, size="640x272", fps=25) for i in range(4)]
        measure("testsrc 640x272, 5 s", wide)
        hd = [write_testsrc(root / f"hd{i}.mp4", 5, size="1280x720", fps=25) for i in range(2)]
        measure("testsrc 1280x720, 5 s", hd)


if __name__ == "__main__":
    main()
