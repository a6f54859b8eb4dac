"""Parquet that a run writes becomes visible exactly once, on S3 (no rename) and in local folders.

Layout under OUTPUT (names starting with `_` are outside every reader's glob):

    _staging/<run_id>/           the run's files while it runs; names are hashes of their rows
    _runs/<run_id>.intent.json   written once staging is complete: each staged file and its final
                                 name, the files it replaces, and the run record
    _runs/<run_id>.json          the commit record (the run record itself), written last

Commit: intent -> delete the files it replaces (classify --overwrite; first, so that no reader
sees old and new rows together) -> publish every file under its final name (S3: server-side copy;
local: copy to a temp name, then rename; publishing again rewrites the same bytes) -> commit
record -> delete staging and intent. Recovery (`recover`, run by the next run before it
plans, under the scan lease): an intent without a commit record is published again and committed
(roll forward); staging without an intent is deleted. While a crashed run waits for recovery a
reader sees every earlier run's files and a subset of the crashed run's, each file whole: some
rows missing, none twice.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import faults, storage
from .rows import PREDICTION_SCHEMA

STAGING = "_staging"
RUNS = "_runs"
INTENT_SUFFIX = ".intent.json"

# One row per staged file: the run adds these up (one row per file, never one per video).
MANIFEST_SCHEMA = pa.schema([
    ("data_file", pa.string()),
    ("state_file", pa.string()),
    ("rows", pa.int64()),
    ("segments", pa.int64()),  # ok rows
    ("ok_videos", pa.int64()),
    ("error_videos", pa.int64()),
    ("retry_videos", pa.int64()),  # storage failures: not written (scan) or written as errors
])


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by start time: 20261201T010203Z-1a2b3c."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"


def staging_dir(output: str, run_id: str) -> str:
    return storage.join(output, STAGING, run_id)


def record_uri(output: str, run_id: str) -> str:
    return storage.join(output, RUNS, f"{run_id}.json")


def intent_uri(output: str, run_id: str) -> str:
    return storage.join(output, RUNS, f"{run_id}{INTENT_SUFFIX}")


# --- staging (runs in Ray Data tasks) -----------------------------------------------------------


def write_staged(rows: pa.Table, staging: str, keep_retry: bool,
                 state_rows: Callable[[pa.Table], pa.Table] | None = None) -> pa.Table:
    """Ray Data step: one batch of prediction rows (PREDICTION_SCHEMA plus `retry`) -> one staged
    Parquet file named by the hash of its rows' keys (a retried task rewrites the same file), plus
    `state_rows(written rows)` as a second file when given. Rows that failed on storage (`retry`)
    are written as error rows when `keep_retry`, else left out (a scan tries them again next
    night). Returns one MANIFEST_SCHEMA row."""
    retry = rows["retry"].fill_null(False)
    first = pc.equal(rows["segment"], 0)
    retry_videos = pc.sum(pc.and_(retry, first)).as_py() or 0
    written = (rows if keep_retry else rows.filter(pc.invert(retry))).drop_columns(["retry"])
    written = written.cast(PREDICTION_SCHEMA)
    ok = pc.equal(written["status"], "ok")
    first = pc.equal(written["segment"], 0)
    summary = {"data_file": None, "state_file": None, "rows": written.num_rows,
               "segments": pc.sum(ok).as_py() or 0,
               "ok_videos": pc.sum(pc.and_(ok, first)).as_py() or 0,
               "error_videos": pc.sum(pc.and_(pc.invert(ok), first)).as_py() or 0,
               "retry_videos": 0 if keep_retry else retry_videos}
    if written.num_rows:
        name = f"part-{_keys_hash(written)}.parquet"
        summary["data_file"] = storage.join(staging, "data", name)
        _write_parquet(written, summary["data_file"])
        faults.pause("writing")
        if state_rows is not None:
            summary["state_file"] = storage.join(staging, "state", name)
            _write_parquet(state_rows(written), summary["state_file"])
    return pa.Table.from_pylist([summary], schema=MANIFEST_SCHEMA)


def _keys_hash(rows: pa.Table) -> str:
    keys = sorted(zip(rows["video_uri"].to_pylist(), rows["video_etag"].to_pylist(),
                      rows["model_version"].to_pylist(), rows["segment"].to_pylist()))
    digest = hashlib.sha256()
    for key in keys:
        digest.update("\0".join(map(str, key)).encode() + b"\n")
    return digest.hexdigest()[:20]


def _write_parquet(table: pa.Table, uri: str) -> None:
    fs, path = storage.filesystem(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle)


# --- commit and recovery (the driver) -----------------------------------------------------------


def commit(output: str, run_id: str, files: Iterable[tuple[str, str]], record: dict,
           replaces: Iterable[str] = ()) -> dict:
    """Make a fully staged run visible: intent, publish, drop `replaces`, commit record, cleanup.
    `files` are (staged URI, final URI) pairs. Returns the committed record."""
    intent = {"run_id": run_id, "files": [list(pair) for pair in files],
              "replaces": list(replaces), "record": record}
    storage.write_json(intent_uri(output, run_id), intent)
    faults.pause("after_intent")
    return _finish(output, intent)


def recover(output: str, run_id: str, discard_staging: bool = True) -> list[str]:
    """Finish what crashed runs left under OUTPUT: roll forward every intent without a commit
    record (returns their run ids), and (with `discard_staging`) delete staging that has no
    intent. Only safe while no other run writes to OUTPUT (the scan lease)."""
    names = storage.list_names(storage.join(output, RUNS))
    committed = {name[:-len(".json")] for name in names
                 if name.endswith(".json") and not name.endswith(INTENT_SUFFIX)}
    intents = {name[:-len(INTENT_SUFFIX)] for name in names if name.endswith(INTENT_SUFFIX)}
    rolled = []
    for pending in sorted(intents):
        if pending in committed:  # crashed after its commit record: only the cleanup is left
            _clean_up(output, pending)
            continue
        intent = storage.read_json(intent_uri(output, pending))
        intent["record"] = {**intent["record"], "recovered_by": run_id}
        _finish(output, intent)
        rolled.append(pending)
    if discard_staging:
        for leftover in storage.list_names(storage.join(output, STAGING)):
            if leftover not in intents:
                storage.remove(staging_dir(output, leftover), recursive=True)
    return rolled


def committed_records(output: str) -> list[dict]:
    """Every commit record under OUTPUT/_runs, oldest first."""
    names = [name for name in storage.list_names(storage.join(output, RUNS))
             if name.endswith(".json") and not name.endswith(INTENT_SUFFIX)]
    records = [storage.read_json(storage.join(output, RUNS, name)) for name in sorted(names)]
    return [record for record in records if record]


def _finish(output: str, intent: dict) -> dict:
    run_id, files = intent["run_id"], intent["files"]
    # The files replaced go first (classify --overwrite): a reader then sees old rows or new ones,
    # some missing for a moment, never both mixed. Rolling forward removes them again: harmless.
    for uri in intent["replaces"]:
        storage.remove(uri)
    if files:
        _publish(*files[0])
        faults.pause("mid_publish")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda pair: _publish(*pair), files[1:]))
    record = {**intent["record"], "committed_at": datetime.now(timezone.utc).isoformat()}
    storage.write_json(record_uri(output, run_id), record)
    _clean_up(output, run_id)
    return record


def _clean_up(output: str, run_id: str) -> None:
    storage.remove(staging_dir(output, run_id), recursive=True)
    storage.remove(intent_uri(output, run_id))


def _publish(source: str, target: str) -> None:
    try:
        storage.publish(source, target)
    except FileNotFoundError:
        # Rolling forward a run whose staging is already gone: its files must all be in place.
        fs, path = storage.filesystem(target)
        if not fs.exists(path):
            raise
