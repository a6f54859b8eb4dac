"""Training at UCF50's shape: 50 classes, 40 videos each; memory flat as the corpus grows 4x.

    .venv/bin/python tests/benchmarks/bench_training_scale.py [--workers 2] [--root DIR]

Writes a 50-class corpus in the UCF50 layout (made once under --root): 360 distinct synthetic
videos (9 motions x 40) hard-linked into 50 class folders of 40, so every class has 40 videos
of its own URI (decoding and training cost per URI as usual; the bytes repeat across classes,
which neither throughput nor memory depends on). Decodes its 2,000 videos once with Ray Data,
then trains ONE epoch of the default model with Ray Train on `--workers` workers on those clips
(1x) and on the same clips four times over (4x: 8,000 rows, the corpus grown 4x without decoding
it again), sampling the resident memory (RSS) of the driver and of each of this run's Ray Train
workers every 0.2 s. Prints training clips/s per worker and the peak memory at 1x and 4x, and
records the ratios (bench-results.json).

A worker's RSS also counts the pages of Ray's shared object store that it has touched (the clips
arrive through it, zero-copy: RssShmem in /proc/PID/status), which grow with the corpus an epoch
reads although they belong to the store, not to the worker, and are given back under pressure.
The worker ratio is therefore taken on its private memory (RssAnon: heap, torch, buffers); the
total RSS is printed beside it.

What bounds a worker's private memory is its local shuffle buffer (training.SHUFFLE_BUFFER: Ray
Data copies up to 1.5x it into the heap), not the corpus, once a worker's shard is larger than
the buffer. An earlier version of this benchmark took 500 videos as 1x: 250 clips per worker of
2, which never filled the 256-clip buffer, so the workers' private peak went 510 -> 805 MB (1.59)
at 2,000 videos, although 4 epochs of the 500-video corpus peaked at 545 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.clips import decode_labelled  # noqa: E402
from pipeline.corpus import read_corpus  # noqa: E402
from pipeline.models import DEFAULT_ARCH  # noqa: E402
from pipeline.models.checkpoint import ModelConfig  # noqa: E402
from pipeline.ray_runtime import ensure_ray, set_verbose  # noqa: E402
from pipeline.synthetic import MOTIONS, make_corpus  # noqa: E402
from pipeline.training import RunSpec, TrainSettings, pool_frames, train_distributed  # noqa: E402
from results import record  # noqa: E402

CLASSES, PER_CLASS = 50, 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "vidpipe-ucf50-shape"))
    args = parser.parse_args()
    root = Path(args.root)
    corpus = _corpus(root)
    set_verbose(False)
    ensure_ray()
    work = Path(tempfile.mkdtemp(prefix="vidpipe-scale-"))
    results = {}
    clips = decode_labelled(corpus.videos, pool_frames(20, TrainSettings()), 64)
    for share, copies in (("1x", 1), ("4x", 4)):
        dataset = clips.dataset if copies == 1 else clips.dataset.union(
            *[clips.dataset] * (copies - 1))
        with _PeakMemory() as memory:
            result = train_distributed(
                ModelConfig(DEFAULT_ARCH, corpus.class_names), dataset, None,
                TrainSettings(epochs=1, min_steps=0), RunSpec(str(work), f"scale-{share}",
                                                              workers=args.workers))
        stats = result.history[0]
        videos = len(corpus.videos) * copies
        results[share] = {"videos": videos, "clips": clips.count * copies,
                          "clips_per_s_per_worker": stats.clips_per_s / args.workers,
                          "epoch_s": stats.seconds, "driver_mb": memory.driver_mb,
                          "worker_mb": memory.worker_mb,
                          "worker_private_mb": memory.worker_private_mb}
        print(f"{share}: {videos} videos, {clips.count * copies} clips, one epoch in "
              f"{stats.seconds:.1f} s, {stats.clips_per_s / args.workers:.1f} clips/s per worker; "
              f"peak RSS driver {memory.driver_mb:.0f} MB, workers "
              f"{', '.join(f'{mb:.0f}' for mb in memory.worker_mb)} MB (private: "
              f"{', '.join(f'{mb:.0f}' for mb in memory.worker_private_mb)} MB)", flush=True)
    driver_ratio = results["4x"]["driver_mb"] / results["1x"]["driver_mb"]
    worker_ratio = (max(results["4x"]["worker_private_mb"])
                    / max(results["1x"]["worker_private_mb"]))
    total_ratio = max(results["4x"]["worker_mb"]) / max(results["1x"]["worker_mb"])
    print(f"peak memory 4x / 1x corpus: driver {driver_ratio:.2f}, worker private {worker_ratio:.2f} "
          f"(worker RSS with the object store's shared pages: {total_ratio:.2f})")
    note = (f"50 classes, {args.workers} Ray Train workers, one epoch; peak memory at 8,000 vs "
            f"2,000 videos")
    record("training clips/s per worker (50 classes, 2,000 videos)",
           results["1x"]["clips_per_s_per_worker"], note=note)
    record("training driver memory, 4x corpus vs 1x", driver_ratio, 1.25, False, note)
    record("training worker private memory, 4x corpus vs 1x", worker_ratio, 1.25, False, note)

def _corpus(root: Path):
    """50 class folders of 40 videos, hard links to 360 distinct ones (see the module doc)."""
    if not (root / "C49").exists():
        distinct = root.with_name(root.name + "-distinct")
        make_corpus(str(distinct), tuple(MOTIONS), per_class=PER_CLASS, groups=4, seed=50)
        sources = sorted(distinct.glob("*/*.mp4"))
        for number in range(CLASSES):
            folder = root / f"C{number:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for clip in range(PER_CLASS):
                source = sources[(number * PER_CLASS + clip) % len(sources)]
                group = clip % 4 + 1
                os.link(source, folder / f"v_C{number:02d}_g{group:02d}_c{clip + 1:02d}.mp4")
    return read_corpus(str(root))


class _PeakMemory:
    """Peak RSS of this process and of each of its Ray Train worker processes (descendants of
    this process, which started the local Ray: another Ray's workers on the machine do not
    count), sampled in a thread."""

    def __enter__(self):
        self._stop = threading.Event()
        self.driver_mb, self._workers, self._private = 0.0, {}, {}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def worker_mb(self) -> list[float]:
        return sorted(self._workers.values(), reverse=True)

    @property
    def worker_private_mb(self) -> list[float]:
        return sorted(self._private.values(), reverse=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.driver_mb = max(self.driver_mb, _memory_mb(os.getpid())["VmRSS"])
            for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        title = handle.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:  # gone meanwhile
                    continue
                if (title.startswith("ray::RayTrainWorker") and _descends_from(pid, os.getpid())
                        and (memory := _memory_mb(pid))):
                    self._workers[pid] = max(self._workers.get(pid, 0.0), memory["VmRSS"])
                    self._private[pid] = max(self._private.get(pid, 0.0), memory["RssAnon"])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as handle:  # "pid (name) state ppid ...": name may hold spaces
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == ancestor:
            return True
    return False


def _memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and RssAnon of a process from /proc (Linux), in MB; empty if it is gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                name = line.split(":", 1)[0]
                if name in ("VmRSS", "RssAnon"):
                    found[name] = int(line.split()[1]) / 1024
    except OSError:
        return {}
    return found if len(found) == 2 else {}


if __name__ == "__main__":
    main()
