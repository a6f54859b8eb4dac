"""Ray Data classify next to the plain sequential loop and the overlap bound; peak memory at 1x
and 4x the corpus; seconds to the first Parquet row. One run, side by side.

    .venv/bin/python tests/benchmarks/bench_classify.py [--clips 200]

All engines use the same model (a fresh cnn3d_gru, 20x64x64: throughput does not depend on the
weights) and write Parquet:
- sequential: inference.classify_sequential (one process: decode a clip, classify in batches of
  16, write one Parquet file);
- decode only / inference only: the two halves of that loop timed apart over the same clips,
  one thread each; the overlap bound is the slower of the two (what a pipeline that ran decoding
  and inference fully in parallel, each on its own core, could reach);
- ray: inference.classify as it runs on a CPU cluster (tasks that decode and classify,
  committed Parquet);
- ray, actor pool: the same with num_actors (decode tasks feeding classifier actors: what GPU
  clusters run, and what CPU clusters ran before), for comparison in the same run.
Peak memory is the largest summed RSS of this process and all its descendants (Ray's raylet,
workers and actors), read from /proc every 0.2 s. The first Parquet row: seconds from the start
of classify until a Parquet file (staged or committed) exists under the output.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from pipeline import storage  # noqa: E402
from pipeline.inference import Classifier, classify, classify_sequential  # noqa: E402
from pipeline.model_store import load_model  # noqa: E402
from pipeline.models.checkpoint import ModelConfig, save_checkpoint  # noqa: E402
from pipeline.ray_runtime import ensure_ray  # noqa: E402
from pipeline.segments import decode_video  # noqa: E402
from pipeline.synthetic import make_corpus  # noqa: E402
from results import record  # noqa: E402


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


class FirstParquet:
    """Seconds until a .parquet file appears anywhere under `folder` (polled every 0.05 s)."""

    def __init__(self, folder: Path):
        self.folder, self.seconds = folder, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and self.seconds is None:
            if any(self.folder.rglob("*.parquet")):
                self.seconds = time.perf_counter() - self._started
            time.sleep(0.05)

    def __enter__(self):
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class CpuAccount:
    """CPU seconds spent during a run by each kind of process of this machine (sampled from
    /proc every 0.2 s, so processes that end mid-run still count up to their last sample):
    where a 2-core pipeline's time goes besides decoding and the model."""

    KINDS = (("classifier actor", "ClassifierActor"),
             ("decode + classify tasks and other Ray Data tasks", "ray::"),
             ("Ray's own processes (raylet, GCS, agents)", "ray/"))

    def __init__(self):
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
            seconds = (int(stat[11]) + int(stat[12])) / self._tick
            self.first.setdefault(pid, 0.0 if self._started else seconds)  # new: began mid-run
            self.last[pid] = (cmd, seconds)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.2)

    def __enter__(self):
        self._started = False
        self._sample()  # what ran before counts from here
        self._started = True
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def seconds(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, (cmd, seconds) in self.last.items():
            spent = seconds - self.first.get(pid, 0.0)
            if pid == os.getpid():
                kind = "driver (Ray Data's executor, this script)"
            else:
                kind = next((name for name, key in self.KINDS if key in cmd), "other (kernel, ...)")
            totals[kind] = totals.get(kind, 0.0) + spent
        return totals


def halves(folder: str, model: str) -> tuple[float, float]:
    """(decode-only seconds, inference-only seconds) of the sequential loop's work, 1 thread."""
    torch.set_num_threads(1)
    loaded = load_model(model)
    config = loaded.config
    started = time.perf_counter()
    records = []
    for video in storage.list_videos(folder):
        listed = {"video_uri": video.uri, "video_etag": video.etag, "video_bytes": video.size}
        records += decode_video(listed, config.frames, config.size, config.window_seconds(None))
    decode_s = time.perf_counter() - started
    classifier = Classifier(loaded)
    started = time.perf_counter()
    for start in range(0, len(records), 16):
        classifier.rows(records[start:start + 16])
    return decode_s, time.perf_counter() - started


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

        threads = torch.get_num_threads()
        decode_s, infer_s = halves(str(root / "x1"), model)
        torch.set_num_threads(threads)
        with PeakRss() as seq_mem:
            seq = classify_sequential(str(root / "x1"), str(root / "seq.parquet"), model)
        ensure_ray(num_cpus=os.cpu_count())
        classify(str(root / "x1"), str(root / "warmup"), model)  # actor start-up, imports
        with PeakRss() as ray_mem_1x, FirstParquet(root / "ray1") as first:
            ray_1x = classify(str(root / "x1"), str(root / "ray1"), model)
        with PeakRss() as ray_mem_4x, CpuAccount() as cpu_4x:
            ray_4x = classify(str(root / "x4"), str(root / "ray4"), model)
        actors = max(1, os.cpu_count() // 2)  # the pool size CPU clusters used to get
        classify(str(root / "x1"), str(root / "warmup-actors"), model, num_actors=actors)
        actors_1x = classify(str(root / "x1"), str(root / "actors1"), model, num_actors=actors)
        actors_4x = classify(str(root / "x4"), str(root / "actors4"), model, num_actors=actors)

    mib = 1024 * 1024
    videos = seq["videos"]
    bound_s = max(decode_s, infer_s)
    print(f"decode only     : {videos:4d} clips {videos / decode_s:6.2f} videos/s (1 thread)")
    print(f"inference only  : {videos:4d} clips {videos / infer_s:6.2f} videos/s (1 thread)")
    print(f"overlap bound   : {videos:4d} clips {videos / bound_s:6.2f} videos/s "
          f"(the slower of the two)")
    print(f"sequential loop : {seq['videos']:4d} clips {seq['videos_per_s']:6.2f} videos/s "
          f"peak RSS {seq_mem.peak / mib:6.0f} MiB ({threads} torch threads)")
    print(f"ray data 1x     : {ray_1x['videos']:4d} clips {ray_1x['videos_per_s']:6.2f} videos/s "
          f"peak RSS {ray_mem_1x.peak / mib:6.0f} MiB (driver + raylet + workers)")
    print(f"ray data 4x     : {ray_4x['videos']:4d} clips {ray_4x['videos_per_s']:6.2f} videos/s "
          f"peak RSS {ray_mem_4x.peak / mib:6.0f} MiB")
    print(f"actor pool 1x   : {actors_1x['videos']:4d} clips {actors_1x['videos_per_s']:6.2f} videos/s "
          f"({actors} classifier actor(s) fed by decode tasks)")
    print(f"actor pool 4x   : {actors_4x['videos']:4d} clips {actors_4x['videos_per_s']:6.2f} videos/s")
    work = 4 * (decode_s + infer_s)
    print(f"CPU seconds during the 4x classify ({ray_4x['wall_s']:.1f} s wall, "
          f"{os.cpu_count()} CPUs; the same work in one process, 1 thread: {work:.1f} s):")
    for kind, seconds in sorted(cpu_4x.seconds().items(), key=lambda item: -item[1]):
        print(f"  {seconds:7.1f} s  {kind}")
    ceiling = os.cpu_count() / ((decode_s + infer_s) / videos)
    print(f"2-core ceiling (decode + inference on every core, no overhead): {ceiling:.1f} videos/s "
          f"= {ceiling / seq['videos_per_s']:.2f}x the sequential loop")
    record("pipeline vs sequential loop (videos/s)", ray_1x["videos_per_s"] / seq["videos_per_s"],
           target=1.5, note=f"{videos} short clips; classify (Ray Data) / classify_sequential")
    record("pipeline at 4x the corpus vs sequential loop (videos/s)",
           ray_4x["videos_per_s"] / seq["videos_per_s"], target=1.5,
           note=f"{4 * videos} clips: Ray's fixed start-up (workers, torch import) amortised")
    record("perfect 2-core pipeline vs sequential loop (ceiling)", ceiling / seq["videos_per_s"],
           note="cores / (decode + inference seconds per video, 1 thread each)")
    record("actor-pool pipeline vs sequential loop (videos/s)",
           actors_1x["videos_per_s"] / seq["videos_per_s"],
           note=f"{videos} clips; decode tasks feeding {actors} classifier actor(s) (GPU clusters' shape)")
    record("actor-pool pipeline at 4x the corpus vs sequential loop (videos/s)",
           actors_4x["videos_per_s"] / seq["videos_per_s"], note=f"{4 * videos} clips")
    record("pipeline vs overlap bound", ray_1x["videos_per_s"] / (videos / bound_s), target=0.8,
           note="bound: the slower of decode-only and inference-only, 1 thread each")
    record("peak memory 4x corpus / 1x", ray_mem_4x.peak / ray_mem_1x.peak, target=1.25,
           higher_is_better=False)
    if first.seconds is not None:
        record("seconds to the first Parquet row (classify, staged file)", first.seconds,
               note=f"of {ray_1x['wall_s']:.1f} s for the whole classify")


if __name__ == "__main__":
    main()
