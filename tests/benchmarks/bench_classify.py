"""Ray Data classify vs the plain sequential loop on the same clips, and peak memory at 1x and 4x.

    .venv/bin/python tests/benchmarks/bench_classify.py [--clips 200]

Both engines use the same model (a fresh cnn3d_gru, 20x64x64: throughput does not depend on the
weights) and write Parquet. Peak memory is the largest summed RSS of this process and all its
descendants (Ray's raylet, workers and actors), read from /proc every 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.inference import classify, classify_sequential  # noqa: E402
from pipeline.models.checkpoint import ModelConfig, save_checkpoint  # noqa: E402
from pipeline.ray_runtime import ensure_ray  # noqa: E402
from pipeline.synthetic import make_corpus  # noqa: E402


def tree_rss(root: int) -> int:
    """Summed resident memory (bytes) of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakRss:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_corpus(str(root / "x1"), per_class=args.clips // 4, seed=2)
        for copy in range(4):  # 4x the clips: the same files under other names
            shutil.copytree(root / "x1", root / "x4" / f"copy{copy}")
        config = ModelConfig("cnn3d_gru", ("MoveDown", "MoveLeft", "MoveRight", "MoveUp"))
        save_checkpoint(config.build(), config, root / "model.pt")
        model = str(root / "model.pt")

        with PeakRss() as seq_mem:
            seq = classify_sequential(str(root / "x1"), str(root / "seq.parquet"), model)
        ensure_ray(num_cpus=os.cpu_count())
        classify(str(root / "x1"), str(root / "warmup"), model)  # actor start-up, imports
        with PeakRss() as ray_mem_1x:
            ray_1x = classify(str(root / "x1"), str(root / "ray1"), model)
        with PeakRss() as ray_mem_4x:
            ray_4x = classify(str(root / "x4"), str(root / "ray4"), model)

    mib = 1024 * 1024
    print(f"sequential loop : {seq['videos']:4d} clips {seq['videos_per_s']:6.2f} videos/s "
          f"peak RSS {seq_mem.peak / mib:6.0f} MiB")
    print(f"ray data 1x     : {ray_1x['videos']:4d} clips {ray_1x['videos_per_s']:6.2f} videos/s "
          f"peak RSS {ray_mem_1x.peak / mib:6.0f} MiB (driver + raylet + workers)")
    print(f"ray data 4x     : {ray_4x['videos']:4d} clips {ray_4x['videos_per_s']:6.2f} videos/s "
          f"peak RSS {ray_mem_4x.peak / mib:6.0f} MiB")
    print(f"speed-up ray/sequential at 1x: {ray_1x['videos_per_s'] / seq['videos_per_s']:.2f}; "
          f"peak memory 4x/1x: {ray_mem_4x.peak / ray_mem_1x.peak:.2f}")


if __name__ == "__main__":
    main()
