"""`vidpipe scan`: driver memory of a dry run at 10,000 vs 100,000 objects, and scan throughput next
to classify on the same corpus.

    .venv/bin/python tests/benchmarks/bench_scan.py [--small 10000] [--large 100000] [--clips 48]

Memory: each dry run (list + diff against the committed state, no decoding) runs in a fresh
`vidpipe scan --dry-run` process and reports its own peak RSS (getrusage; the driver only, not
Ray's workers). The archive is empty files in 100 folders; the committed state covers 90% of
them plus 2% that have since been deleted, so the diff has new, unchanged and deleted objects.
Fails (exit 1) when the 100k driver peak exceeds 1.25x the 10k one.

Throughput: classify and a first scan of the same synthetic corpus in one process (one local Ray,
warmed up by a first classify), with the same model and batch size. The scan's figure is end to
end (listing, diff, processing, class statistics, commit, MLflow); `process` is its
list-decode-classify-stage phase alone, the part that compares with classify.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline import commit, storage  # noqa: E402
from pipeline.models.checkpoint import ModelConfig, save_checkpoint  # noqa: E402
from pipeline.scan import STATE_SCHEMA  # noqa: E402

MAX_RATIO = 1.25
FOLDERS = 100


def make_archive(root: Path, objects: int) -> None:
    for index in range(objects):
        folder = root / f"d{index % FOLDERS:03d}"
        if index < FOLDERS:
            folder.mkdir(parents=True)
        (folder / f"v{index:07d}.mp4").touch()


def commit_state(archive: Path, output: Path, objects: int, model_version: str) -> None:
    """A committed scan record whose state holds 90% of the archive and 2% deleted since."""
    listed = storage.list_videos(str(archive))
    known = listed[: int(0.9 * objects)]
    gone = [f"file://{archive}/gone/v{i:07d}.mp4" for i in range(int(0.02 * objects))]
    run_id = commit.new_run_id()
    rows = pa.table({
        "video_uri": [v.uri for v in known] + gone,
        "video_etag": [v.etag for v in known] + ["fp-gone"] * len(gone),
        "video_bytes": [0] * (len(known) + len(gone)),
        "model_name": [None] * (len(known) + len(gone)),  # as state written before it was recorded
        "model_version": [model_version] * (len(known) + len(gone)),
        "status": ["ok"] * (len(known) + len(gone)),
        "run_id": [run_id] * (len(known) + len(gone)),
    }, schema=STATE_SCHEMA)
    state_file = output / "_state" / run_id / "part-0.parquet"
    state_file.parent.mkdir(parents=True)
    pq.write_table(rows, state_file)
    storage.write_json(str(output / "_runs" / f"{run_id}.json"),
                       {"kind": "scan", "run_id": run_id, "listed": len(known),
                        "state_files": [str(state_file)], "classes": {}})


def dry_run(archive: Path, output: Path, model: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "scan", str(archive), str(output),
                           "--model", str(model), "--dry-run", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"dry run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(sizes: tuple[int, int], work: Path, model: Path, model_version: str) -> bool:
    results = {}
    for objects in sizes:
        archive, output = work / f"archive-{objects}", work / f"out-{objects}"
        started = time.perf_counter()
        make_archive(archive, objects)
        commit_state(archive, output, objects, model_version)
        made = time.perf_counter() - started
        record = dry_run(archive, output, model)
        results[objects] = record
        print(f"dry run {objects:7d} objects: driver peak RSS {record['driver_peak_rss_mb']:6.0f} MiB, "
              f"{record['wall_s']:6.1f} s (listed {record['listed']}, new {record['new']}, "
              f"unchanged {record['unchanged']}, deleted {record['deleted']}; archive made in {made:.0f} s)",
              flush=True)
    small, large = (results[n]["driver_peak_rss_mb"] for n in sizes)
    ratio = large / small
    ok = ratio <= MAX_RATIO
    print(f"driver peak memory {sizes[1]}/{sizes[0]} objects: {ratio:.3f} "
          f"({'ok' if ok else 'FAIL'}: limit {MAX_RATIO})")
    return ok


def throughput(clips: int, work: Path) -> None:
    from pipeline.inference import classify
    from pipeline.ray_runtime import ensure_ray
    from pipeline.scan import ScanRequest, run_scan
    from pipeline.synthetic import make_corpus

    corpus = work / "corpus"
    make_corpus(str(corpus), per_class=max(1, clips // 4), seed=2)
    config = ModelConfig("cnn3d_gru", ("MoveDown", "MoveLeft", "MoveRight", "MoveUp"))
    save_checkpoint(config.build(), config, work / "model-20x64.pt")
    model = str(work / "model-20x64.pt")
    ensure_ray(num_cpus=os.cpu_count())
    classify(str(corpus), str(work / "warmup"), model)  # actor start-up, imports
    classified = classify(str(corpus), str(work / "classified"), model)
    scanned = run_scan(ScanRequest(str(corpus), str(work / "scanned"), model,
                                   mlflow_uri=f"sqlite:///{work / 'mlflow.db'}"), say=lambda m: None)
    print(f"classify : {classified['videos']:4d} videos {classified['videos_per_s']:6.2f} videos/s "
          f"({classified['wall_s']:.1f} s)")
    print(f"scan     : {scanned['processed']:4d} videos {scanned['videos_per_s']:6.2f} videos/s "
          f"({scanned['wall_s']:.1f} s: plan {scanned['plan_s']:.1f} s, process "
          f"{scanned['process_s']:.1f} s = {scanned['processed'] / scanned['process_s']:.2f} videos/s, "
          f"class stats and state {scanned['stats_s']:.1f} s)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        work = Path(tmp)
        config = ModelConfig("cnn3d_gru32", ("MoveDown", "MoveLeft", "MoveRight", "MoveUp"),
                             frames=8, size=32)
        save_checkpoint(config.build(), config, work / "model.pt")
        from pipeline.model_store import load_model

        version = load_model(str(work / "model.pt")).lineage.model_version
        ok = memory((args.small, args.large), work, work / "model.pt", version)
        if not args.skip_throughput:
            throughput(args.clips, work)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
