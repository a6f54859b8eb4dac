"""`vidpipe similar` on a large output: the query time over a generated table of --rows
prediction rows (default 1e6) in the real schema (rows.PREDICTION_SCHEMA), with random unit
embeddings of the default model's width (128).

    .venv/bin/python tests/benchmarks/bench_similar.py [--rows 1000000] [--repeats 3]

The table is written as Parquet files of 100,000 rows (a classify OUTPUT's layout), built with
numpy and pyarrow, never as Python rows. The time is similar.similar end to end: finding the
query segment's row, then the k-nearest query (one DuckDB scan of every embedding); the median of
--repeats after one warm-up (the files are then in the page cache, as on a machine that has read
them once), with its CPU seconds (this process's, DuckDB's threads included: on a shared machine
the steadier figure) and the load average. The process's peak RSS is reported beside it: the
rows never come into Python.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.rows import PREDICTION_SCHEMA, parquet_options  # noqa: E402
from pipeline.similar import similar  # noqa: E402
from results import record  # noqa: E402

WIDTH = 128  # the default model's embedding (motion3d_gru128's GRU state)
ROWS_PER_FILE = 100_000
SEGMENTS_PER_VIDEO = 4
CLASSES = pa.array(["MoveDown", "MoveLeft", "MoveRight", "MoveUp", "RotateCW", "RotateCCW"])


def generated_rows(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    """`count` ok rows from row number `start`: four segments per video, random labels and
    scores, random unit embeddings; columns the benchmark does not need are null."""
    number = np.arange(start, start + count)
    video = pc.cast(pa.array(number // SEGMENTS_PER_VIDEO), pa.string())
    segment = (number % SEGMENTS_PER_VIDEO).astype(np.int32)
    vectors = rng.standard_normal((count, WIDTH), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    columns = {
        "video_uri": pc.binary_join_element_wise("s3://archive/v", video, ".mp4", ""),
        "video_etag": pc.binary_join_element_wise("etag-", video, ""),
        "segment": pa.array(segment),
        "start_s": pa.array(segment * 2.0),
        "label": pc.take(CLASSES, pa.array(rng.integers(0, len(CLASSES), count))),
        "score": pa.array(rng.uniform(0.2, 1.0, count).astype(np.float32)),
        "model_name": pa.repeat("motion3d_gru128", count),
        "model_version": pa.repeat("sha256:0123456789abcdef", count),
        "embedding": pa.ListArray.from_arrays(
            pa.array(np.arange(0, (count + 1) * WIDTH, WIDTH, dtype=np.int32)),
            pa.array(vectors.reshape(-1))),
        "status": pa.repeat("ok", count),
        "processed_at": pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), count),
    }
    columns["end_s"] = pa.array(segment * 2.0 + 2.0)
    arrays = [columns[field.name].cast(field.type) if field.name in columns
              else pa.nulls(count, field.type) for field in PREDICTION_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=PREDICTION_SCHEMA)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as output:
        started = time.perf_counter()
        for number, start in enumerate(range(0, args.rows, ROWS_PER_FILE)):
            table = generated_rows(start, min(ROWS_PER_FILE, args.rows - start), rng)
            pq.write_table(table, f"{output}/part-{number:04d}.parquet",
                           **parquet_options(table.schema))  # as classify and scan write
        size = sum(path.stat().st_size for path in Path(output).glob("*.parquet"))
        print(f"wrote {args.rows} rows ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        query = "s3://archive/v12345.mp4"
        similar(output, query, segment=1, k=args.k)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeats):
            started, used = time.perf_counter(), _cpu_seconds()
            found = similar(output, query, segment=1, k=args.k)
            times.append(time.perf_counter() - started)
            cpu.append(_cpu_seconds() - used)
        assert len(found["neighbours"]) == args.k
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = statistics.median(times)
    print(f"similar over {args.rows} rows: {seconds:.2f} s (median of {args.repeats}: "
          f"{', '.join(f'{t:.2f}' for t in times)}); CPU {statistics.median(cpu):.2f} s "
          f"(DuckDB's threads included; the wall time on an idle machine is about this over the "
          f"cores); load average {os.getloadavg()[0]:.1f}; peak RSS {rss_before:.0f} -> "
          f"{rss_after:.0f} MB; nearest similarity {found['neighbours'][0]['similarity']:.3f}")
    record(f"similar_query_s_{args.rows}_rows", seconds, higher_is_better=False,
           note=f"similar.similar (query row + k={args.k} nearest, DuckDB) over {args.rows} "
                f"generated rows, {WIDTH}-float unit embeddings, {size / 1e6:.0f} MB Parquet; "
                f"median of {args.repeats} warm runs (CPU {statistics.median(cpu):.2f} s, load "
                f"average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
