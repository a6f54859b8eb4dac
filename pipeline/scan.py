"""`vidpipe scan`: the nightly scan of an archive; incremental, exactly once, resumable.

Layout under OUTPUT:

    predictions/scan_date=YYYY-MM-DD/<run_id>-part-<hash>.parquet   prediction rows; the reader's
        contract is the glob OUTPUT/predictions/**/*.parquet (hive partitioning: scan_date)
    _state/<run_id>/part-<hash>.parquet   what a committed run settled, one STATE_SCHEMA row per
        video: ok / error (processed), deleted (gone from the archive), restored (back again)
    _runs/<run_id>.json                   the run record, which is also the commit record
    _runs/<run_id>.intent.json, _staging/<run_id>/, _replaced/<run_id>/   a run in flight or
        crashed (commit.py)
    _lease.json                           one writer at a time, the fence of the commit (lease.py)

One run, through commit.OutputWriter as classify's: take the lease -> finish what crashed runs
left (commit.recover) -> plan: the listing (listing.listing_dataset) and the committed state,
diffed per video_uri by a Ray Data keyed aggregation (`diff_dataset`: a summary of each block's
rows of a URI, merged, then decided, so the plan does not depend on how Ray splits rows into
blocks; no shuffle for a first scan's blocks, or a small archive's one block) into new / changed /
reprocess / unchanged / deleted / restored, written to staging -> count the plan (Ray
aggregation) -> predictions for the new, changed and reprocessed videos (inference.predictions),
staged with one state row per video -> per-class counts and mean score (Ray aggregation) -> run
record (ScanRecord) with the drift against the last scan -> commit (its
commit point is a compare-and-swap on the lease) -> MLflow.

What counts as done: an (video_uri, video_etag) with an ok or error state row (an undecodable video
is not retried until its ETag changes). By default under any model, so a new champion does not
reclassify the archive; with `reprocess_on_model_change`, only under this model: the same
model_name and model_version (a registry version number alone is not a model: `models:/a/3` and
`models:/b/3` differ). State written before model_name was recorded has none and matches on the
version alone (`same_model`).
A storage failure while reading leaves no row and no state: the next scan tries again; so does a
video that changed between the listing and the read (segments.py), whose new ETag the next
listing sees.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from . import commit, decoder_choice, faults, storage
from .frames import DEFAULT_TIMEOUT_S
from .infrastructure import check_model_on_nodes, check_nodes
from .listing import listing_dataset
from .progress import Progress, mark
from .rows import first_rows, prediction_schema

PREDICTIONS = "predictions"
STATE = "_state"
CHANGES = ("new", "changed", "reprocess", "unchanged", "deleted", "restored")
WORK = ("new", "changed", "reprocess")  # changes that are classified
STATE_CHANGES = ("deleted", "restored")  # changes that are only recorded
SETTLED = ("ok", "error")
EXPERIMENT = "vidpipe-scan"

STATE_SCHEMA = pa.schema([
    ("video_uri", pa.string()),
    ("video_etag", pa.string()),
    ("video_bytes", pa.int64()),
    ("model_name", pa.string()),  # null in state written before it was recorded
    ("model_version", pa.string()),
    ("status", pa.string()),  # ok | error | deleted | restored; null on listing rows in the diff
    ("run_id", pa.string()),
])
PLAN_SCHEMA = pa.schema([
    ("video_uri", pa.string()),  # null on the per-partition tally of unchanged videos
    ("video_etag", pa.string()),
    ("video_bytes", pa.int64()),
    ("change", pa.string()),
    ("count", pa.int64()),  # 1, or the number of unchanged videos the tally row stands for
])


@dataclass(frozen=True)
class ScanRequest:
    archive: str
    output: str
    model: str
    scan_date: date | None = None  # default: today (UTC)
    dry_run: bool = False
    reprocess_on_model_change: bool = False
    window_seconds: float | None = None
    batch_size: int = 16
    num_actors: int | None = None
    error_threshold: float = 0.5
    rows_per_file: int = 50_000
    lease_seconds: float = 300.0
    mlflow_uri: str | None = None
    ray_address: str | None = None
    decoder: str = "pyav"  # frames.DECODER_CHOICES, resolved by decoder_choice.py
    decode_timeout_s: float = DEFAULT_TIMEOUT_S  # per started minute of video
    embeddings: bool = True  # each ok row's `embedding` (False: --no-embeddings)


# --- the diff (pure) ----------------------------------------------------------------------------
#
# Per video_uri, the diff needs only a summary of its rows: the listed version, the ETags settled
# (by any model, and by this model), and the last state row. A summary is made from any subset of
# the URI's rows and two summaries merge (`merge_summaries`, associative and commutative), so the
# decision (`decide`) does not depend on how the rows are split into blocks or partitions; in
# Ray this is a keyed aggregation (`UriDiff` through `diff_dataset`).


def same_model(state: dict, model_name: str | None, model_version: str) -> bool:
    """Whether a state row was settled by this model: the same name and version. A row without a
    name (state written before model_name was recorded), or a caller that gives none, matches on
    the version alone: the rows such a run wrote carry this very model_version, and classifying
    again would write a second (video_uri, video_etag, model_version, segment)."""
    if state["model_version"] != model_version:
        return False
    name = state.get("model_name")
    return name is None or model_name is None or name == model_name


def summarize(rows: list[dict], model_name: str | None, model_version: str) -> dict:
    """Listing rows (status None) and state rows of ONE video_uri (any subset of them) -> the
    summary the decision needs. Every field has a value (never null), so that Arrow gives the
    summaries of every block one type: "" and -1 stand for none, sets are newline-joined."""
    summary = _EMPTY_SUMMARY
    for row in rows:
        summary = merge_summaries(summary, _row_summary(row, model_name, model_version))
    return summary


_EMPTY_SUMMARY = {"listed": 0, "etag": "", "bytes": -1, "done": "", "here": "",
                  "last_run": "", "last_status": "", "last_etag": "", "last_bytes": -1}


def _row_summary(row: dict, model_name: str | None, model_version: str) -> dict:
    size = -1 if row["video_bytes"] is None else row["video_bytes"]
    if row["status"] is None:  # a listing row
        return {**_EMPTY_SUMMARY, "listed": 1, "etag": row["video_etag"], "bytes": size}
    settled = row["status"] in SETTLED
    here = settled and same_model(row, model_name, model_version)
    return {**_EMPTY_SUMMARY, "done": row["video_etag"] if settled else "",
            "here": row["video_etag"] if here else "", "last_run": row["run_id"] or "",
            "last_status": row["status"], "last_etag": row["video_etag"], "last_bytes": size}


def merge_summaries(a: dict, b: dict) -> dict:
    """Two summaries of the same URI's rows -> the summary of all of them."""
    video = max(a, b, key=lambda s: (s["listed"], s["etag"], s["bytes"]))
    last = max(a, b, key=lambda s: (s["last_run"], s["last_status"], s["last_etag"]))
    return {"listed": video["listed"], "etag": video["etag"], "bytes": video["bytes"],
            "done": _union(a["done"], b["done"]), "here": _union(a["here"], b["here"]),
            "last_run": last["last_run"], "last_status": last["last_status"],
            "last_etag": last["last_etag"], "last_bytes": last["last_bytes"]}


def _union(a: str, b: str) -> str:
    return "\n".join(sorted((set(a.split("\n")) | set(b.split("\n"))) - {""}))


def decide(summary: dict, reprocess: bool) -> dict:
    """A URI's summary -> {"change", "video_etag", "video_bytes"}: change is one of CHANGES, or
    "" when there is nothing to plan (gone, and already recorded as deleted). See the module
    docstring for what counts as done."""
    done_any = set(summary["done"].split("\n")) - {""}
    done_here = set(summary["here"].split("\n")) - {""}
    if summary["listed"]:
        etag = summary["etag"]
        if etag in (done_here if reprocess else done_any):
            change = "restored" if summary["last_status"] == "deleted" else "unchanged"
        elif etag in done_any:
            change = "reprocess"
        elif done_any:
            change = "changed"
        else:
            change = "new"
        return {"change": change, "video_etag": etag, "video_bytes": summary["bytes"]}
    if summary["last_run"] and summary["last_status"] != "deleted":
        return {"change": "deleted", "video_etag": summary["last_etag"],
                "video_bytes": summary["last_bytes"]}
    return {"change": "", "video_etag": "", "video_bytes": -1}


def diff_uri_rows(rows: list[dict], model_version: str, reprocess: bool,
                  model_name: str | None = None) -> tuple[list[dict], int]:
    """Listing rows (status None) and state rows, in any order and of any URIs, each URI with all
    its rows -> (plan rows, number of unchanged videos). The model is (model_name, model_version):
    see `same_model`."""
    by_uri: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_uri[row["video_uri"]].append(row)
    plan, unchanged = [], 0
    for uri, uri_rows in by_uri.items():
        decided = decide(summarize(uri_rows, model_name, model_version), reprocess)
        if decided["change"] == "unchanged":
            unchanged += 1
        elif decided["change"]:
            plan.append({"video_uri": uri, **_plan_columns(decided), "count": 1})
    return plan, unchanged


def _plan_columns(decided: dict) -> dict:
    size = decided["video_bytes"]
    return {"video_etag": decided["video_etag"], "video_bytes": None if size < 0 else size,
            "change": decided["change"]}


def tvd(shares: dict[str, float], previous: dict[str, float]) -> float:
    """Total variation distance between two class distributions: 0 same, 1 disjoint."""
    labels = set(shares) | set(previous)
    return 0.5 * sum(abs(shares.get(label, 0.0) - previous.get(label, 0.0)) for label in labels)


# --- Ray stages ---------------------------------------------------------------------------------


def plan_dataset(archive: str, state_files: list[str], model_version: str, reprocess: bool,
                 partitions: int, model_name: str | None = None):
    """The plan (PLAN_SCHEMA) as a Ray dataset: the listing and the committed state, diffed per
    video_uri by a keyed aggregation (`diff_dataset`). The model is (model_name, model_version);
    without a name, state rows match on the version alone (`same_model`)."""
    listing = listing_dataset(archive).map_batches(_listing_as_state, batch_format="pyarrow")
    if not state_files:
        # Nothing settled yet (a first scan): a URI's one row is its listing's (the listing's
        # units are disjoint), so every block holds all of its URIs' rows and is diffed alone:
        # no shuffle, whose aggregator actors took 3-5 s of a small first scan.
        return _diffed_by_block(listing, model_name, model_version, reprocess)
    # All columns, cast per block: state files written before model_name was recorded lack it,
    # and read_parquet(columns=...) over old and new files drops it or fails.
    state = _read_parquet(state_files).map_batches(_cast_state, batch_format="pyarrow")
    return diff_dataset(listing.union(state), model_name, model_version, reprocess, partitions)


def diff_dataset(rows, model_name: str | None, model_version: str, reprocess: bool,
                 partitions: int):
    """Listing and state rows (STATE_SCHEMA, as a Ray dataset) -> the plan (PLAN_SCHEMA): a Ray
    Data keyed aggregation by video_uri (`UriDiff`: a summary per block, merged, decided), so
    the plan is the same however Ray splits the rows into blocks, then one plan row per video
    to process or record and a tally row of the unchanged per block.

    One partition (an archive of up to MIN_URIS_PER_PARTITION videos, `_partitions`) needs no
    shuffle: the rows are merged into one block and diffed by one task with the same rules
    (`diff_uri_rows`). The hash shuffle starts an aggregator actor, a worker process of its own:
    on 2 CPUs it took 3-5 s of a 24-video scan's plan, the one-block diff 0.3-0.5 s."""
    if partitions == 1:
        return _diffed_by_block(rows.repartition(1), model_name, model_version, reprocess)
    return (rows.map_batches(_packed, batch_format="pyarrow")
            .groupby("video_uri", num_partitions=partitions)
            .aggregate(uri_diff(model_name, model_version, reprocess))
            .map_batches(_plan_rows, batch_format="pyarrow"))


def _diffed_by_block(rows, model_name: str | None, model_version: str, reprocess: bool):
    """`_diff_block` over every block of `rows` (a Ray dataset whose blocks each hold all the
    rows of their URIs): no shuffle."""
    return rows.map_batches(_diff_block, batch_size=None, batch_format="pyarrow",
                            fn_kwargs={"model_name": model_name, "model_version": model_version,
                                       "reprocess": reprocess})


def _diff_block(rows: pa.Table, model_name: str | None, model_version: str,
                reprocess: bool) -> pa.Table:
    """Ray Data step: listing and state rows, ALL the rows of each URI among them -> the plan
    (PLAN_SCHEMA), the unchanged videos as one tally row."""
    plan, unchanged = diff_uri_rows(rows.to_pylist(), model_version, reprocess, model_name)
    table = pa.Table.from_pylist(plan, schema=PLAN_SCHEMA)
    if not unchanged:
        return table
    return pa.concat_tables([table, _unchanged_tally(unchanged)])


def _unchanged_tally(unchanged: int) -> pa.Table:
    return pa.table({"video_uri": [None], "video_etag": [None], "video_bytes": [None],
                     "change": ["unchanged"], "count": [unchanged]}, schema=PLAN_SCHEMA)


def _packed(rows: pa.Table) -> pa.Table:
    """Ray Data step: STATE_SCHEMA rows -> (video_uri, row: the rest as a struct). An aggregation
    names the one column it reads (`on`), and Ray Data gives it only that one and the key."""
    rest = [name for name in STATE_SCHEMA.names if name != "video_uri"]
    return pa.table({"video_uri": rows["video_uri"],
                     "row": pa.StructArray.from_arrays(
                         [rows[name].combine_chunks() for name in rest], names=rest)})


def uri_diff(model_name: str | None, model_version: str, reprocess: bool):
    """The Ray Data aggregation of the diff (ray.data.aggregate.AggregateFnV2; defined here so
    that importing this module does not import Ray): `summarize` per block of a URI's rows,
    `merge_summaries`, `decide`. Its column is "diff"."""
    from ray.data.aggregate import AggregateFnV2

    class UriDiff(AggregateFnV2):
        def __init__(self):
            super().__init__("diff", zero_factory=lambda: None, on="row", ignore_nulls=True)

        def aggregate_block(self, block: pa.Table) -> dict:
            return summarize(block["row"].to_pylist(), model_name, model_version)

        def combine(self, current: dict, new: dict) -> dict:
            return merge_summaries(current, new)

        def finalize(self, accumulator: dict) -> dict:
            return decide(accumulator, reprocess)

    return UriDiff()


def _plan_rows(diffs: pa.Table) -> pa.Table:
    """Ray Data step: UriDiff's rows (video_uri, diff) -> PLAN_SCHEMA rows, the unchanged videos
    as one tally row."""
    if diffs.num_rows == 0:
        return PLAN_SCHEMA.empty_table()
    diff = diffs["diff"].combine_chunks()
    change = diff.field("change")
    unchanged = pc.sum(pc.equal(change, "unchanged")).as_py() or 0
    keep = pc.invert(pc.is_in(change, pa.array(["", "unchanged"])))
    size = diff.field("video_bytes")
    plan = pa.table({
        "video_uri": diffs["video_uri"],
        "video_etag": diff.field("video_etag"),
        "video_bytes": pc.if_else(pc.less(size, 0), pa.scalar(None, pa.int64()), size),
        "change": change,
        "count": pa.array([1] * diffs.num_rows, pa.int64()),
    }).filter(keep).cast(PLAN_SCHEMA)
    if not unchanged:
        return plan
    return pa.concat_tables([plan, _unchanged_tally(unchanged)])


def _listing_as_state(listing: pa.Table) -> pa.Table:
    nulls = {name: pa.nulls(listing.num_rows, STATE_SCHEMA.field(name).type)
             for name in ("model_name", "model_version", "status", "run_id")}
    return pa.table({name: listing[name] if name in listing.column_names else nulls[name]
                     for name in STATE_SCHEMA.names}, schema=STATE_SCHEMA)


def _cast_state(table: pa.Table) -> pa.Table:
    """A block of committed state -> STATE_SCHEMA; model_name null where the file has none."""
    return pa.table({name: table[name] if name in table.column_names
                     else pa.nulls(table.num_rows, STATE_SCHEMA.field(name).type)
                     for name in STATE_SCHEMA.names}).cast(STATE_SCHEMA)


def count_changes(plan, write_to: str | None = None) -> dict[str, int]:
    """{change: videos} of a plan dataset, summed from per-block counts (no shuffle). With
    `write_to`, the same tasks write the plan's rows that name a video (not the tallies of the
    unchanged) as Parquet files in that folder: one pass over the plan, not a write and then a
    read to count it."""
    counts = dict.fromkeys(CHANGES, 0)
    counted = plan.map_batches(_counted_plan_block, batch_size=None, batch_format="pyarrow",
                               fn_kwargs={"write_to": write_to})
    for row in counted.take_all():  # 6 rows per block at most
        counts[row["change"]] += int(row["count"])
    counts["listed"] = sum(counts[c] for c in ("new", "changed", "reprocess", "unchanged", "restored"))
    return counts


def _counted_plan_block(plan: pa.Table, write_to: str | None) -> pa.Table:
    """Ray Data step: a block of the plan -> (change, count) rows; writes its video rows into
    `write_to` (if given) under a name that hashes their URIs, so a retried task rewrites the same
    file, and blocks (disjoint sets of URIs after the diff's grouping) never share one."""
    videos = plan.filter(pc.is_valid(plan["video_uri"]))
    if write_to is not None and videos.num_rows:
        digest = hashlib.sha256("\n".join(sorted(videos["video_uri"].to_pylist())).encode())
        commit.write_parquet(videos, storage.join(write_to, f"part-{digest.hexdigest()[:20]}.parquet"))
    sums = plan.group_by("change").aggregate([("count", "sum")])
    return pa.table({"change": sums["change"], "count": sums["count_sum"]})


def class_stats(data_files: list[str]) -> dict[str, dict]:
    """{label: {segments, share, mean_score}} over the ok rows of `data_files`."""
    from ray.data.expressions import col

    if not data_files:
        return {}
    rows = _read_parquet(data_files, columns=["status", "label", "score"])
    stats = _sums_by(rows.filter(expr=col("status") == "ok"), "label", ["score"])
    total = sum(sums["rows"] for sums in stats.values())
    return {label: {"segments": int(sums["rows"]),
                    "share": round(sums["rows"] / total, 6),
                    "mean_score": round(float(sums["score"] / sums["rows"]), 6)}
            for label, sums in sorted(stats.items())}


def _sums_by(dataset, key: str, columns: list[str]) -> dict[str, dict[str, float]]:
    """{value of `key`: {"rows": n, column: sum, ...}} over a dataset of few distinct keys:
    each block is summed by a task, the partial sums (blocks x keys rows) here. No shuffle, so no
    aggregator actors: one placed on a node that is lost fails the whole job (ActorDiedError,
    not retried), where a lost task is retried elsewhere."""
    def block_sums(block: pa.Table) -> pa.Table:
        return block.group_by(key).aggregate([([], "count_all"),
                                              *[(column, "sum") for column in columns]])

    totals: dict[str, dict[str, float]] = {}
    partial = dataset.select_columns([key, *columns]).map_batches(
        block_sums, batch_size=None, batch_format="pyarrow")
    for row in partial.take_all():
        sums = totals.setdefault(row[key], dict.fromkeys(["rows", *columns], 0))
        sums["rows"] += row["count_all"]
        for column in columns:
            sums[column] += row[f"{column}_sum"] or 0
    return totals


def state_rows(written: pa.Table, run_id: str) -> pa.Table:
    """commit.write_staged's state file: one row per video of the written rows (its segment 0
    row; every processed video has exactly one), status ok or error."""
    first = written.filter(first_rows(written))
    return pa.table({
        "video_uri": first["video_uri"], "video_etag": first["video_etag"],
        "video_bytes": first["video_bytes"], "model_name": first["model_name"],
        "model_version": first["model_version"], "status": first["status"],
        "run_id": pa.array([run_id] * first.num_rows, pa.string()),
    }, schema=STATE_SCHEMA)


def _recorded_state(plan: pa.Table, model_version: str, run_id: str,
                    model_name: str | None = None) -> pa.Table:
    """Ray Data step: the plan's deleted/restored rows as state rows (their model columns say
    which scan recorded them; the diff reads them only from ok/error rows)."""
    chosen = plan.filter(pc.is_in(plan["change"], pa.array(STATE_CHANGES)))
    n = chosen.num_rows
    return pa.table({
        "video_uri": chosen["video_uri"], "video_etag": chosen["video_etag"],
        "video_bytes": chosen["video_bytes"],
        "model_name": pa.array([model_name] * n, pa.string()),
        "model_version": pa.array([model_version] * n, pa.string()),
        "status": chosen["change"], "run_id": pa.array([run_id] * n, pa.string()),
    }, schema=STATE_SCHEMA)


def _read_parquet(uris: list[str] | str, columns: list[str] | None = None):
    import ray

    uris = [uris] if isinstance(uris, str) else uris
    destinations = [storage.arrow_destination(uri) for uri in uris]
    return ray.data.read_parquet([path for path, _ in destinations],
                                 filesystem=destinations[0][1], columns=columns)


# --- the run ------------------------------------------------------------------------------------


@dataclass
class ScanRecord:
    """What one scan did: its run record, written as the commit record (`_runs/<run_id>.json`),
    printed by --json and logged to MLflow."""

    run_id: str
    scan_date: str
    archive: str
    output: str
    model: str
    model_name: str
    model_version: str
    window_seconds: float
    reprocess_on_model_change: bool
    dry_run: bool
    started_at: str
    kind: str = "scan"
    recovered: list[str] = field(default_factory=list)
    # the plan: videos per change (count_changes)
    listed: int = 0
    new: int = 0
    changed: int = 0
    reprocess: int = 0
    unchanged: int = 0
    deleted: int = 0
    restored: int = 0
    # the work: planned = new + changed + reprocess; each is processed (ok or error) or retried
    planned: int = 0
    processed: int = 0
    errors: int = 0
    retry: int = 0
    segments: int = 0
    nodes: list[str] = field(default_factory=list)
    classes: dict = field(default_factory=dict)
    drift_tvd: float | None = None
    drift_against: str | None = None
    files: list[str] = field(default_factory=list)
    state_files: list[str] = field(default_factory=list)
    plan_s: float = 0.0
    process_s: float = 0.0
    stats_s: float = 0.0
    wall_s: float = 0.0
    videos_per_s: float = 0.0
    driver_peak_rss_mb: float = 0.0
    mlflow_run_id: str | None = None
    # how frames were decoded: "pyav", "ffmpeg" or "nvdec" (decoder_choice.py), and how many
    # videos an NVDEC run had to decode on the CPU instead (inference.decode_fallbacks)
    decoder: str = "pyav"
    decode_fallbacks: int = 0

    def count_plan(self, counts: dict[str, int]) -> None:
        for change in (*CHANGES, "listed"):
            setattr(self, change, counts[change])
        self.planned = sum(counts[change] for change in WORK)

    def finish(self, started: float) -> None:
        self.wall_s = round(time.perf_counter() - started, 3)
        self.videos_per_s = round(self.processed / self.wall_s, 3) if self.wall_s else 0.0
        self.driver_peak_rss_mb = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    def as_dict(self) -> dict:
        return asdict(self)


def run_scan(request: ScanRequest, say: Callable[[str], None]) -> dict:
    """One scan; returns its committed run record. Raises LeaseHeld when another run writes
    OUTPUT, TooManyErrors after committing when more than the threshold of the planned videos
    could not be read (undecodable, or storage failures left for the next scan)."""
    # Here, not at the top: the plan's Ray Data steps are functions of this module, and the
    # workers that run them would otherwise import torch (seconds per worker) for nothing.
    from .inference import check_error_share
    from .model_store import load_model
    from .ray_runtime import ensure_ray
    from .tracking import store_opening, tracking_uri

    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    loaded = load_model(request.model, request.mlflow_uri)
    scan_date = request.scan_date or started_at.date()
    record = ScanRecord(
        run_id=commit.new_run_id(started_at), scan_date=scan_date.isoformat(),
        archive=request.archive, output=request.output, model=request.model,
        model_name=loaded.lineage.model_name, model_version=loaded.lineage.model_version,
        window_seconds=loaded.config.window_seconds(request.window_seconds),
        reprocess_on_model_change=request.reprocess_on_model_change, dry_run=request.dry_run,
        started_at=started_at.isoformat())
    if request.dry_run:  # reads only: no lease, no recovery, nothing written
        ensure_ray(request.ray_address)
        _configure_ray_data()
        records = commit.committed_records(request.output)
        plan = plan_dataset(request.archive, _state_files(records), record.model_version,
                            request.reprocess_on_model_change, _partitions(records),
                            model_name=record.model_name)
        record.count_plan(count_changes(plan))
        say(_describe_plan(record))
        record.finish(started)
        return record.as_dict()
    ensure_ray(request.ray_address)
    # Before OUTPUT is touched: a decoder that cannot run here is a usage error, nothing written.
    record.decoder = decoder_choice.choose(request.decoder, say)
    with (commit.OutputWriter(request.output, record.run_id, request.lease_seconds) as writer,
          store_opening(tracking_uri(request.mlflow_uri)) as store_opened):  # the lease is ours
        if writer.recovered:
            say(f"rolled forward crashed run(s) {', '.join(writer.recovered)}")
        record.recovered = writer.recovered
        # A node that cannot decode fails now (NVDEC's fallback is PyAV).
        check_nodes(request.archive, "pyav" if record.decoder == "nvdec" else record.decoder)
        _configure_ray_data()
        committed, tracking = _run(request, record, loaded, writer, say, started, store_opened)
    _track(tracking, committed)
    mark("tracked")
    check_error_share(committed["errors"] + committed["retry"], committed["planned"],
                      request.error_threshold, request.output)
    return committed


def _run(request: ScanRequest, record: ScanRecord, loaded, writer, say, started: float,
         store_opened: Callable[[], str]):
    """The scan under the lease: plan, process, stage, commit. Returns (committed record, its
    MLflow run); `store_opened` waits for MLflow's store and returns its URI
    (tracking.store_opening)."""
    from .inference import (decode_fallbacks, manifest_totals, predictions, stage_rows,  # see run_scan
                            staged_files)

    output, run_id, staging = request.output, record.run_id, writer.staging
    phase = time.perf_counter()
    records = commit.committed_records(output)
    plan_uri = storage.join(staging, "plan")
    plan = plan_dataset(request.archive, _state_files(records), record.model_version,
                        request.reprocess_on_model_change, _partitions(records),
                        model_name=record.model_name)
    record.count_plan(count_changes(plan, write_to=plan_uri))
    say(_describe_plan(record))
    mark("planned")
    record.plan_s, phase = round(time.perf_counter() - phase, 3), time.perf_counter()
    if record.listed == 0:
        raise FileNotFoundError(f"no videos found under {request.archive}; nothing committed")

    manifest = []
    if record.planned:
        # Only now: a scan with nothing to classify needs no torch.
        check_model_on_nodes(loaded.checkpoint_ref)
        with Progress(say, total=record.planned) as progress:
            work = _read_parquet(plan_uri).filter(expr=_column("change").is_in(list(WORK)))
            rows = predictions(work, loaded, request.window_seconds, request.batch_size,
                               request.num_actors, progress.handle, decoder=record.decoder,
                               decode_timeout_s=request.decode_timeout_s,
                               video_count=record.planned, embeddings=request.embeddings)
            manifest = stage_rows(rows, staging, keep_retry=False,
                                  schema=prediction_schema(request.embeddings),
                                  state_rows=partial(state_rows, run_id=run_id),
                                  rows_per_file=request.rows_per_file)
            record.nodes = progress.nodes()
    record.process_s, phase = round(time.perf_counter() - phase, 3), time.perf_counter()
    recorded = []
    if record.deleted or record.restored:
        recorded = _stage_recorded_state(plan_uri, staging, record.model_version, run_id)
    faults.pause("before_commit")

    totals = manifest_totals(manifest)
    data_files = staged_files(manifest)
    state_files = sorted(staged_files(manifest, "state_file") + recorded)
    record.processed = totals["ok_videos"] + totals["error_videos"]
    record.errors, record.retry = totals["error_videos"], totals["retry_videos"]
    record.segments = totals["segments"]
    record.decode_fallbacks = decode_fallbacks(totals, record.decoder)
    record.classes = class_stats(data_files)
    record.drift_tvd, record.drift_against = _drift(record.classes, records)
    partition = storage.join(output, PREDICTIONS, f"scan_date={record.scan_date}")
    publish = ([(uri, storage.join(partition, f"{run_id}-{posixpath.basename(uri)}"))
                for uri in data_files]
               + [(uri, storage.join(output, STATE, run_id, posixpath.basename(uri)))
                  for uri in state_files])
    record.files = [final for _, final in publish[:len(data_files)]]
    record.state_files = [final for _, final in publish[len(data_files):]]
    record.stats_s = round(time.perf_counter() - phase, 3)
    record.finish(started)
    tracking = _start_tracking(store_opened(), record.as_dict(), say)
    record.mlflow_run_id = tracking.run_id
    try:
        committed = writer.commit(publish, record.as_dict())
        mark("committed")
    except BaseException:
        tracking.end(ok=False)
        raise
    drift = "none (nothing to compare)" if record.drift_tvd is None else f"{record.drift_tvd:g}"
    say(f"committed {run_id}: {record.processed} of {record.planned} planned videos processed, "
        f"{record.errors} errors, {record.retry} to retry, {record.deleted} deleted, "
        f"drift {drift}"
        + (f"; decoded on NVDEC, {record.decode_fallbacks} videos fell back to the CPU"
           if record.decoder == "nvdec" else ""))
    return committed, tracking


def _stage_recorded_state(plan_uri: str, staging: str, model_version: str, run_id: str
                          ) -> list[str]:
    """The plan's deleted/restored rows as staged state files; returns their URIs."""
    state_uri = storage.join(staging, "recorded")
    path, fs = storage.arrow_destination(state_uri)
    (_read_parquet(plan_uri)
     .map_batches(_recorded_state, batch_format="pyarrow",
                  fn_kwargs={"model_version": model_version, "run_id": run_id})
     .write_parquet(path, filesystem=fs))
    return [storage.join(state_uri, name) for name in storage.list_names(state_uri)
            if name.endswith(".parquet")]


def _configure_ray_data() -> None:
    """Two process-wide Ray Data settings for this driver (nothing else in vidpipe shuffles or
    reads Parquet through Ray Data while a scan runs):
    - hash shuffle (aggregator actors) rather than 2.60's default SHUFFLE_V2, which starts a
      dedicated worker pool for every shuffle: measured on 2 CPUs, a whole small scan took
      68-74 s instead of 95-102 s;
    - the V1 Parquet datasource: V2 (2.60's default) lists files through FooterReader actors
      spread over the nodes while the dataset streams, and an actor on a node that dies fails the
      whole read (ActorDiedError, not retried), so losing one worker node mid-scan failed the
      scan. V1 reads footers before execution and reads files in tasks that Ray retries."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    context = DataContext.get_current()
    context.shuffle_strategy = ShuffleStrategy.HASH_SHUFFLE
    context.use_datasource_v2 = False


def _column(name: str):
    from ray.data.expressions import col

    return col(name)


def _state_files(records: list[dict]) -> list[str]:
    return [uri for record in records if record.get("kind") == "scan"
            for uri in record.get("state_files", [])]


URIS_PER_PARTITION = 100_000  # the diff's shuffle partitions hold about this many URIs each
MIN_URIS_PER_PARTITION = 10_000  # and no fewer, unless the archive has fewer in all


def _partitions(records: list[dict]) -> int:
    """Shuffle partitions for the diff, from the last scan's listing size: about
    URIS_PER_PARTITION URIs each; two per CPU where that keeps MIN_URIS_PER_PARTITION each (so a
    small archive is one partition: each is an aggregator actor to start, about a second on 2
    cores); two per CPU when no scan has listed the archive yet (its size is unknown)."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    listed = max([record.get("listed", 0) for record in records if record.get("kind") == "scan"],
                 default=0)
    if not listed:
        return 2 * cpus
    spread = min(2 * cpus, math.ceil(listed / MIN_URIS_PER_PARTITION))
    return max(spread, min(1024, math.ceil(listed / URIS_PER_PARTITION)))


def _drift(classes: dict, records: list[dict]) -> tuple[float | None, str | None]:
    """(total variation distance between this run's class shares and those of the last scan
    that classified anything, that scan's run id); the distance is None when either has none."""
    previous = next((r for r in reversed(records) if r.get("kind") == "scan" and r.get("classes")),
                    None)
    if not classes or previous is None:
        return None, previous["run_id"] if previous else None
    shares = {label: stats["share"] for label, stats in classes.items()}
    before = {label: stats["share"] for label, stats in previous["classes"].items()}
    return round(tvd(shares, before), 6), previous["run_id"]


def _describe_plan(record: ScanRecord) -> str:
    return (f"{record.archive}: {record.listed} videos listed; {record.new} new, "
            f"{record.changed} changed, {record.reprocess} to reprocess, "
            f"{record.unchanged} unchanged, {record.deleted} deleted, {record.restored} restored")


# --- MLflow (best effort: a tracking outage never costs a scan) ---------------------------------

def _start_tracking(uri: str, record: dict, say):
    """The scan's MLflow run in the store at `uri`, started before the commit so that the record
    can name it."""
    from .tracking import TrackedRun

    return TrackedRun(uri, EXPERIMENT, record["run_id"], lambda message: say(f"warning: {message}"))


def _track(run, record: dict) -> None:
    """Log the committed record to its MLflow run and end it."""
    if not run.active:
        return
    run.log_params({"archive": record["archive"], "output": record["output"],
                    "model": record["model"], "model_version": record["model_version"],
                    "scan_date": record["scan_date"], "run_id": record["run_id"],
                    "window_seconds": record["window_seconds"],
                    "reprocess_on_model_change": record["reprocess_on_model_change"],
                    "decoder": record["decoder"]})
    metrics = {key: record[key] for key in ("listed", "new", "changed", "reprocess", "unchanged",
                                            "deleted", "restored", "planned", "processed",
                                            "errors", "retry", "decode_fallbacks",
                                            "segments", "wall_s", "videos_per_s")}
    if record.get("drift_tvd") is not None:
        metrics["drift_tvd"] = record["drift_tvd"]
    for label, stats in record.get("classes", {}).items():
        metrics[f"class_segments.{label}"] = stats["segments"]
        metrics[f"class_mean_score.{label}"] = stats["mean_score"]
    run.log_metrics(metrics)
    run.set_tags({"vidpipe.kind": "scan", "vidpipe.output": record["output"]})
    run.end(ok=True)
