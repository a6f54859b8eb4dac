"""Load: 2,000 short clips through `classify` on the loopback two-node cluster, with the memory of
the cluster's processes sampled each second and the throughput read from the job's progress lines
(one each half minute). Memory must stay flat (no growth from the second quarter of the run to the
last) and every video must have exactly one row. Marked `load`: only `make test-all` runs it
(about 5-20 minutes on 2 cores; VIDPIPE_LOAD_CLIPS=N runs N clips instead).

Memory is the proportional set size (PSS: shared pages, such as the object store's, split among
the processes mapping them, so they are not counted once per process) of this cluster's processes
only: those started with its temp dir and their descendants. Other Ray instances on the machine
(other tests, other users) do not count.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time

import numpy as np
import pytest
from checkpoints import untrained_checkpoint
from fixtures.ray_cluster import last_json

from pipeline.synthetic import encode_h264

pytestmark = pytest.mark.load
# VIDPIPE_LOAD_CLIPS: a longer run, to see whether memory keeps growing past where 2,000 ends.
CLIPS = int(os.environ.get("VIDPIPE_LOAD_CLIPS", "2000"))


def _cluster_pids(temp_dir: str) -> set[int]:
    """The processes of the cluster whose temp dir is `temp_dir`: the ones whose command line
    names it (GCS, raylets, dashboard, monitors; workers rename themselves to `ray::...`, so they
    are found as descendants) and all their descendants (workers, the job's driver)."""
    parents, roots = {}, set()
    marker = temp_dir.encode()
    for name in filter(str.isdigit, os.listdir("/proc")):
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                parents[pid] = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if marker in handle.read():
                    roots.add(pid)
        except OSError:  # gone meanwhile
            continue
    found = set(roots)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


def _pss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:  # gone meanwhile
            continue
    return total


def _throughput(log: str) -> list[tuple[float, int]]:
    """(seconds, videos done) from the job's progress lines ("N of M listed videos classified
    (r/s, Ts)")."""
    return [(float(seconds), int(done)) for done, seconds in
            re.findall(r"^(\d+)(?: of \d+ listed)? videos classified \([\d.]+/s, (\d+)s\)$",
                       log, flags=re.MULTILINE)]


def test_two_thousand_clips_with_flat_memory(ray_cluster, tmp_path):
    temp_dir = ray_cluster.env.get("VIDPIPE_RAY_TEMP") or \
        f"/tmp/vidpipe-ray-{ray_cluster.env['VIDPIPE_GCS_PORT']}"  # as cluster/local/start.sh
    source = tmp_path / "videos"
    source.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 32, 32, 3), np.uint8)
    clip = encode_h264(frames, 10)  # one second; copies keep generation cheap
    for index in range(CLIPS):
        folder = source / f"part-{index // 200:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"clip-{index:05d}.mp4").write_bytes(clip)
    untrained_checkpoint(tmp_path / "model.pt", frames=8, size=32)

    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        started = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - started, _pss_bytes(_cluster_pids(temp_dir))))
            if len(samples) % 60 == 0:  # a line a minute: a run stopped early still tells
                print(f"load: {samples[-1][0]:.0f}s cluster PSS {samples[-1][1] / 2**30:.2f} GiB",
                      flush=True)
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        done = ray_cluster.submit(["jobs/batch_classify.py", str(source), str(tmp_path / "out"),
                                   "--model", str(tmp_path / "model.pt"), "--json"], timeout=3600)
    finally:
        stop.set()
        sampler.join()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = last_json(done.stdout)
    assert summary["videos"] == CLIPS and summary["errors"] == 0

    import duckdb

    rows = duckdb.sql(f"select count(*), count(distinct video_uri) from "
                      f"read_parquet('{tmp_path / 'out'}/*.parquet')").fetchall()[0]
    assert rows == (CLIPS, CLIPS)  # one row per video: nothing lost, nothing duplicated

    gib = [pss / 2**30 for _, pss in samples]
    quarter = max(1, len(gib) // 4)
    early, late = max(gib[quarter:2 * quarter]), max(gib[-quarter:])
    progress = _throughput(done.stdout + done.stderr)
    rates = [f"{(b - a) / (t2 - t1):.2f}" for (t1, a), (t2, b) in zip(progress, progress[1:])]
    print(f"\nload: {CLIPS} clips in {summary['wall_s']:.0f}s ({summary['videos_per_s']:.2f} "
          f"videos/s); cluster PSS peak {max(gib):.2f} GiB, 2nd-quarter peak {early:.2f} GiB, "
          f"last-quarter peak {late:.2f} GiB; PSS (GiB), 20 samples over the run: "
          + " ".join(f"{value:.2f}" for value in gib[::max(1, len(gib) // 20)])
          + "; videos done at (s): " + " ".join(f"{count}@{t:.0f}" for t, count in progress)
          + "; videos/s per interval: " + " ".join(rates))
    assert late <= early * 1.25 + 0.25, "memory grows over the run"
    shutil.rmtree(source)
