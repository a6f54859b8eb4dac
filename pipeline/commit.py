"""Parquet that a run writes becomes visible exactly once, on S3 (no rename) and in local folders.

Layout under OUTPUT (names starting with `_` are outside every reader's glob):

    _lease.json                  one writer at a time, and the fence of every commit (lease.py)
    _staging/<run_id>/           the run's files while it runs; names are hashes of their rows
    _runs/<run_id>.intent.json   written once staging is complete: each staged file and its final
                                 name, the files it replaces, and the run record
    _replaced/<run_id>/          backups of the files a committing run replaces, until its record
    _runs/<run_id>.json          the commit record (the run record itself), written once, last

Classify and scan write through the same `OutputWriter`: take the lease -> `recover` -> stage
-> `commit`: intent -> `lease.accept` (the commit point: a compare-and-swap on the lease that
planned the run, which a writer that lost its lease cannot pass) -> back up and delete the files
it replaces (classify --overwrite; first, so that no reader sees old and new rows together) ->
publish every file under its final name (S3: server-side copy; local: copy to a temp name, then
rename; publishing again rewrites the same bytes) -> commit record -> delete staging, backups and
intent -> settle the lease.

Recovery (the next run, right after taking the lease): an intent that the lease accepted is
rolled forward (published and committed) when all its staged files are there; any other intent,
or one whose staging is gone, is rolled back: staging first (every publish copies from it, so a
stalled writer of that run can publish nothing more), then what it published, then the replaced
files come back from their backups. While a crashed run waits for recovery a reader sees every
earlier run's files and a subset of the crashed run's, each file whole: some rows missing, none
twice.

Not guaranteed: a server-side copy already in flight when the next holder deletes the staging
can still land; it publishes the same bytes under the same name, so it matters only if that
holder also deletes the file again in the same moment (classify --overwrite of the run it just
rolled forward). Readers of a local OUTPUT and writers must be on one host (flock).
"""

from __future__ import annotations

import contextlib
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
from .lease import DEFAULT_SECONDS, Lease, LeaseLost
from .rows import first_rows, parquet_options

STAGING = "_staging"
RUNS = "_runs"
REPLACED = "_replaced"
INTENT_SUFFIX = ".intent.json"

# One row per staged file: the run adds these up (one row per file, never one per video).
MANIFEST_SCHEMA = pa.schema([
    ("data_file", pa.string()),
    ("state_file", pa.string()),
    ("rows", pa.int64()),
    ("segments", pa.int64()),  # ok rows
    ("ok_videos", pa.int64()),
    ("error_videos", pa.int64()),
    ("retry_videos", pa.int64()),  # storage failures: left out (scan), or also error_videos
    ("cpu_ok_videos", pa.int64()),  # ok videos decoded on a CPU: a GPU-decoding run's fallbacks
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


def write_staged(rows: pa.Table, staging: str, keep_retry: bool, schema: pa.Schema,
                 state_rows: Callable[[pa.Table], pa.Table] | None = None) -> pa.Table:
    """Ray Data step: one batch of prediction rows (`schema`, a rows.prediction_schema, plus
    `retry`) -> one staged Parquet file named by the hash of its rows' keys (a retried task
    rewrites the same file), plus `state_rows(written rows)` as a second file when given. Rows
    that failed on storage (`retry`) are written as error rows when `keep_retry`, else left out
    (a scan tries them again next night); either way they are counted. Returns one
    MANIFEST_SCHEMA row, also for a batch that writes no file."""
    retry = rows["retry"].fill_null(False)
    retry_videos = pc.sum(pc.and_(retry, first_rows(rows))).as_py() or 0
    written = (rows if keep_retry else rows.filter(pc.invert(retry))).drop_columns(["retry"])
    written = written.cast(schema)
    ok, first = pc.equal(written["status"], "ok"), first_rows(written)
    summary = {"data_file": None, "state_file": None, "rows": written.num_rows,
               "segments": pc.sum(ok).as_py() or 0,
               "ok_videos": pc.sum(pc.and_(ok, first)).as_py() or 0,
               "error_videos": pc.sum(pc.and_(pc.invert(ok), first)).as_py() or 0,
               "retry_videos": retry_videos,
               "cpu_ok_videos": pc.sum(pc.and_(pc.and_(ok, first),
                                               pc.equal(written["decoded_on"], "cpu"))).as_py() or 0}
    if written.num_rows:
        name = f"part-{_keys_hash(written)}.parquet"
        summary["data_file"] = storage.join(staging, "data", name)
        write_parquet(written, summary["data_file"])
        faults.pause("writing")
        if state_rows is not None:
            summary["state_file"] = storage.join(staging, "state", name)
            write_parquet(state_rows(written), summary["state_file"])
    return pa.Table.from_pylist([summary], schema=MANIFEST_SCHEMA)


def _keys_hash(rows: pa.Table) -> str:
    keys = sorted(zip(rows["video_uri"].to_pylist(), rows["video_etag"].to_pylist(),
                      rows["model_name"].to_pylist(), rows["model_version"].to_pylist(),
                      rows["segment"].to_pylist()))
    digest = hashlib.sha256()
    for key in keys:
        digest.update("\0".join(map(str, key)).encode() + b"\n")
    return digest.hexdigest()[:20]


def write_parquet(table: pa.Table, uri: str) -> None:
    """One Parquet file at `uri` (its folder made where the store needs one)."""
    fs, path = storage.filesystem(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle, **parquet_options(table.schema))


# --- one run writing into OUTPUT (the driver) ---------------------------------------------------


class OutputWriter:
    """One run writing into OUTPUT, the same for classify and scan: holds the lease for the whole
    run, finishes what crashed runs left (`recovered`), gives the run its staging folder, and
    commits under the lease.

        with OutputWriter(output, run_id, lease_seconds) as writer:
            ... stage files under writer.staging ...
            record = writer.commit(files, record, replaces)

    A run that fails before its commit point leaves nothing behind but its staging, which it
    removes itself (or the next run does). Raises lease.LeaseHeld when another run holds OUTPUT."""

    def __init__(self, output: str, run_id: str, lease_seconds: float = DEFAULT_SECONDS):
        self.output, self.run_id = output, run_id
        self.lease = Lease(output, run_id, lease_seconds)
        self.staging = staging_dir(output, run_id)
        self.recovered: list[str] = []
        self._intent_written = False  # from then on the next holder decides what becomes of it

    def __enter__(self) -> OutputWriter:
        self.lease.__enter__()
        try:
            self.recovered = recover(self.output, self.lease)
        except BaseException:
            self.lease.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is not None and not self._intent_written:
                with contextlib.suppress(Exception):  # else the next run deletes it
                    storage.remove(self.staging, recursive=True)
        finally:
            self.lease.__exit__(exc_type, *exc)

    def commit(self, files: Iterable[tuple[str, str]], record: dict,
               replaces: Iterable[str] = ()) -> dict:
        """Make the fully staged run visible. `files` are (staged URI, final URI) pairs;
        `replaces`: final files of earlier runs that this run's files replace. Returns the
        committed record; raises LeaseLost, with nothing committed, when the lease is not ours."""
        intent = {"run_id": self.run_id, "generation": self.lease.generation,
                  "files": [list(pair) for pair in files], "replaces": list(replaces),
                  "record": {**record, "lease_generation": self.lease.generation}}
        faults.pause("before_intent")
        self._intent_written = True
        storage.write_json(intent_uri(self.output, self.run_id), intent)
        faults.pause("after_intent")
        try:
            self.lease.accept(self.run_id)  # the commit point: a CAS on the lease we planned under
        except LeaseLost as lost:
            _roll_back(self.output, intent)
            raise LeaseLost(f"{lost}; run {self.run_id} committed nothing") from None
        committed = _finish(self.output, intent)
        with contextlib.suppress(LeaseLost):  # committed already; the next holder settles it
            self.lease.settle([self.run_id])
        return committed


def recover(output: str, lease: Lease) -> list[str]:
    """Finish what earlier runs left under OUTPUT, under `lease` (just taken): an intent the lease
    had accepted is rolled forward when its staged files are all there (returns those run ids),
    else rolled back, as is every intent that was never accepted; staging and replaced-file
    backups of runs without an intent are deleted."""
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
        if pending in lease.inherited and _complete(intent):
            intent["record"] = {**intent["record"], "recovered_by": lease.run_id}
            _finish(output, intent)
            rolled.append(pending)
        else:
            _roll_back(output, intent)
    for folder in (STAGING, REPLACED):
        for leftover in storage.list_names(storage.join(output, folder)):
            if leftover not in intents:
                storage.remove(storage.join(output, folder, leftover), recursive=True)
    if lease.inherited:
        lease.settle(lease.inherited)
    return rolled


def committed_records(output: str) -> list[dict]:
    """Every commit record under OUTPUT/_runs, oldest first."""
    names = [name for name in storage.list_names(storage.join(output, RUNS))
             if name.endswith(".json") and not name.endswith(INTENT_SUFFIX)]
    records = [storage.read_json(storage.join(output, RUNS, name)) for name in sorted(names)]
    return [record for record in records if record]


def _complete(intent: dict) -> bool:
    """Every file of the intent can still be published: staged, or published already."""
    return all(_exists(source) or _exists(target) for source, target in intent["files"])


def _finish(output: str, intent: dict) -> dict:
    """Publish an accepted intent and write its commit record (write-once: a stalled writer that
    resumes after the next holder rolled its run forward does not write it again)."""
    run_id, files = intent["run_id"], intent["files"]
    if not _complete(intent):
        _roll_back(output, intent)
        raise FileNotFoundError(f"the staged files of run {run_id} under {staging_dir(output, run_id)} "
                                f"are gone (deleted by hand or by a lifecycle rule?); rolled back, "
                                f"nothing committed")
    # The files replaced go first (classify --overwrite): a reader then sees old rows or new ones,
    # some missing for a moment, never both mixed. Each is kept under _replaced/ until the commit
    # record is written, so that a run rolled back after this point restores them.
    for uri in intent["replaces"]:
        if _exists(uri):
            storage.publish(uri, _backup_uri(output, run_id, uri))
            storage.remove(uri)
    if files:
        _publish(*files[0])
        faults.pause("mid_publish")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda pair: _publish(*pair), files[1:]))
    record = {**intent["record"], "committed_at": datetime.now(timezone.utc).isoformat()}
    if not storage.create_json(record_uri(output, run_id), record):
        record = storage.read_json(record_uri(output, run_id))
    _clean_up(output, run_id)
    return record


def _roll_back(output: str, intent: dict) -> None:
    """Undo an intent that will not be committed: its staging first (a stalled writer of it can
    publish nothing more: every publish copies from there), then whatever it published, then the
    files it replaced come back from their backups, then the intent."""
    run_id = intent["run_id"]
    storage.remove(staging_dir(output, run_id), recursive=True)
    for _, target in intent["files"]:
        storage.remove(target)
    for uri in intent["replaces"]:
        backup = _backup_uri(output, run_id, uri)
        if _exists(backup) and not _exists(uri):
            storage.publish(backup, uri)
    storage.remove(storage.join(output, REPLACED, run_id), recursive=True)
    storage.remove(intent_uri(output, run_id))


def _clean_up(output: str, run_id: str) -> None:
    storage.remove(staging_dir(output, run_id), recursive=True)
    storage.remove(storage.join(output, REPLACED, run_id), recursive=True)
    storage.remove(intent_uri(output, run_id))


def _backup_uri(output: str, run_id: str, uri: str) -> str:
    return storage.join(output, REPLACED, run_id, posixpath.basename(uri))


def _exists(uri: str) -> bool:
    fs, path = storage.filesystem(uri)
    return fs.exists(path)


def _publish(source: str, target: str) -> None:
    try:
        storage.publish(source, target)
    except FileNotFoundError:
        # Staging already gone: the next holder rolled this run forward (the file is in place) or
        # back (it is not, and must not come back).
        if not _exists(target):
            raise
