"""An OUTPUT as analysts read it: DuckDB views over its Parquet rows and its `_runs/` records.

The analytics commands (export-uncertain, report) read only what a reader of the contract reads
(DESIGN.md: the Parquet glob and the commit records), never the pipeline's internals. Two layouts:
a scan's `OUTPUT/predictions/scan_date=.../*.parquet` (hive partitions) and a classify's
`OUTPUT/*.parquet`, whose rows get the date of their processing as `scan_date`. Remote OUTPUTs
(s3://, any fsspec URL) are read through the same fsspec filesystem the pipeline writes with,
registered in DuckDB, so no DuckDB extension has to be downloaded and credentials stay with the
standard AWS chain (nothing is put into SQL text or printed).

Views on the connection `open_output` returns:
    predictions  every row, plus `scan_date` (DATE)
    runs         one row per committed run: run_id, kind, run_date, processed, errors, retry,
                 wall_s, videos_per_s, drift_tvd
"""

from __future__ import annotations

import posixpath

from . import storage
from .commit import INTENT_SUFFIX, RUNS
from .errors import InvalidInput

SCAN_PREDICTIONS = "predictions"  # scan.PREDICTIONS (scan.py imports Ray Data's side of things)

# The run record fields the report reads; a record that lacks one (classify writes no drift)
# reads NULL there. Classify calls its processed videos `videos`.
RUN_COLUMNS = {"run_id": "VARCHAR", "kind": "VARCHAR", "scan_date": "DATE", "processed": "BIGINT",
               "videos": "BIGINT", "errors": "BIGINT", "retry": "BIGINT", "wall_s": "DOUBLE",
               "videos_per_s": "DOUBLE", "drift_tvd": "DOUBLE", "drift_against": "VARCHAR"}


def predictions_source(output: str) -> str:
    """The DuckDB table expression of OUTPUT's prediction rows, with `scan_date`; InvalidInput
    when OUTPUT holds none."""
    fs, root = storage.filesystem(output)
    if not fs.isdir(root):
        raise InvalidInput(f"no scan output at {output}: not a folder or prefix")
    base = fs.unstrip_protocol(root).rstrip("/")
    if base.startswith("file://"):
        base = base.removeprefix("file://")
    if fs.glob(posixpath.join(root, SCAN_PREDICTIONS, "**", "*.parquet")):
        glob = _quote(f"{base}/{SCAN_PREDICTIONS}/**/*.parquet")
        return (f"read_parquet({glob}, hive_partitioning = true, hive_types = "
                f"{{'scan_date': DATE}}, union_by_name = true)")
    if fs.glob(posixpath.join(root, "*.parquet")):
        glob = _quote(f"{base}/*.parquet")
        return (f"(select *, cast(processed_at as date) as scan_date "
                f"from read_parquet({glob}, union_by_name = true))")
    raise InvalidInput(f"no predictions in {output}: neither predictions/**/*.parquet (scan) "
                       f"nor *.parquet (classify)")


def run_record_uris(output: str) -> list[str]:
    """The committed run records of OUTPUT (not the intents of runs in flight), oldest first."""
    names = storage.list_names(storage.join(output, RUNS))
    return [_local(storage.join(output, RUNS, name)) for name in names
            if name.endswith(".json") and not name.endswith(INTENT_SUFFIX)]


def open_output(output: str):
    """A DuckDB connection with the views `predictions` and `runs` of OUTPUT."""
    import duckdb

    connection = duckdb.connect()
    if not storage.is_local(output):
        fs, _ = storage.filesystem(output)
        connection.register_filesystem(fs)
    connection.execute(f"create view predictions as select * from {predictions_source(output)}")
    records = run_record_uris(output)
    if records:
        files = "[" + ", ".join(_quote(uri) for uri in records) + "]"
        columns = "{" + ", ".join(f"{_quote(name)}: {_quote(kind)}"
                                  for name, kind in RUN_COLUMNS.items()) + "}"
        # The run's date: a scan's scan_date, else the start time its run_id begins with.
        connection.execute(f"""
            create view runs as
            select run_id, coalesce(kind, 'scan') as kind,
                   coalesce(scan_date, cast(strptime(left(run_id, 16), '%Y%m%dT%H%M%SZ') as date))
                       as run_date,
                   coalesce(processed, videos) as processed, errors, retry, wall_s,
                   videos_per_s, drift_tvd, drift_against
            from read_json({files}, columns = {columns}, format = 'auto')
            order by run_id""")
    else:
        connection.execute("create view runs as select " + ", ".join(
            f"null::{kind} as {name}" for name, kind in {
                "run_id": "VARCHAR", "kind": "VARCHAR", "run_date": "DATE",
                "processed": "BIGINT", "errors": "BIGINT", "retry": "BIGINT",
                "wall_s": "DOUBLE", "videos_per_s": "DOUBLE", "drift_tvd": "DOUBLE",
                "drift_against": "VARCHAR"}.items()) + " where false")
    return connection


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
