"""Load: 2,000 short clips through `classify` on the loopback two-node cluster, with the memory of
every Ray process sampled each second and the committed rows counted as they land. Memory must stay
flat (no growth from the first half of the run to the second) and every video must have exactly
one row. Marked `load`: only `make test-all` runs it (about 10-20 minutes on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from fixtures.ray_cluster import last_json

from pipeline.models.checkpoint import ModelConfig, save_checkpoint
from pipeline.synthetic import encode_h264

pytestmark = pytest.mark.load
CLIPS = 2000


def _ray_rss_bytes() -> int:
    """Resident memory of every Ray process on this machine (the loopback cluster's two nodes),
    read from /proc."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"ray" not in handle.read():
                    continue
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except OSError:  # gone meanwhile
            continue
    return total


def test_two_thousand_clips_with_flat_memory(ray_cluster, tmp_path):
    source = tmp_path / "videos"
    source.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 32, 32, 3), np.uint8)
    clip = encode_h264(frames, 10)  # one second; copies keep generation cheap
    for index in range(CLIPS):
        folder = source / f"part-{index // 200:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"clip-{index:05d}.mp4").write_bytes(clip)
    config = ModelConfig("cnn3d_gru32", ("A", "B"), frames=8, size=32)
    torch.manual_seed(0)
    save_checkpoint(config.build(), config, tmp_path / "model.pt")

    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        started = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - started, _ray_rss_bytes()))
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

    gib = [rss / 2**30 for _, rss in samples]
    quarter = max(1, len(gib) // 4)
    early, late = max(gib[quarter:2 * quarter]), max(gib[-quarter:])
    print(f"\nload: {CLIPS} clips in {summary['wall_s']:.0f}s ({summary['videos_per_s']:.1f} "
          f"videos/s); Ray RSS peak {max(gib):.2f} GiB, 2nd-quarter peak {early:.2f} GiB, "
          f"last-quarter peak {late:.2f} GiB; samples every 1s: "
          + " ".join(f"{value:.2f}" for value in gib[::max(1, len(gib) // 20)]))
    assert late <= early * 1.25 + 0.25, "memory grows over the run"
    shutil.rmtree(source)
