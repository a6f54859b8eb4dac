"""Listing an archive as a Ray dataset, in tasks: the driver only ever sees folder names.

`listing_dataset(uri)` gives the listed videos (storage.LISTING_SCHEMA) in blocks of about
LISTING_BLOCK_ROWS, for classify and scan. Like segments.py, this module imports no torch: Ray
workers that run only listing or decoding tasks never pay for importing it.
"""

from __future__ import annotations

import pyarrow as pa

from . import storage
from .progress import report

STREAMED_BLOCKS_AHEAD = 64  # blocks a listing task may hand over before the next step takes them


def listing_dataset(uri: str, progress=None):
    """Ray dataset of the videos under `uri` (or the one video `uri` names), LISTING_SCHEMA.

    One task splits the archive into disjoint prefixes (storage.listing_units; only folder names
    come back), then one task per prefix streams its listing in blocks of LISTING_BLOCK_ROWS.
    """
    import ray

    single = storage.single_object(uri)
    if single is not None:
        report(progress, "listed", single.num_rows)
        return ray.data.from_arrow(single)
    fs, root = storage.filesystem(uri)
    if not fs.exists(root):
        raise FileNotFoundError(f"no videos found under {uri} (it does not exist)")
    wanted = 4 * int(ray.cluster_resources().get("CPU", 1))
    units = ray.get(ray.remote(storage.listing_units).options(num_cpus=0.25).remote(uri, wanted))
    listed = (
        ray.data.from_items([{"prefix": prefix, "recursive": recursive} for prefix, recursive in units],
                            override_num_blocks=len(units))
        .map_batches(_list_units, batch_size=1, batch_format="pyarrow",
                     fn_kwargs={"progress": progress})
        .repartition(target_num_rows_per_block=storage.LISTING_BLOCK_ROWS)
    )
    # A listing task holds a CPU until it has handed over its last block, and Ray Data pauses a
    # task with 2 blocks not yet taken (its default): the listing tasks, fed on by the slower
    # steps after them, kept a CPU of 2 for the first 2.8 s of 700 short clips, so one worker
    # classified while the other waited. Blocks of listed URIs are small; let them run ahead.
    # (The chain's context, shared with the steps that read it, not the process's.)
    listed.context._max_num_blocks_in_streaming_gen_buffer = STREAMED_BLOCKS_AHEAD
    return listed


def _list_units(units: pa.Table, progress=None):
    for unit in units.to_pylist():
        for block in storage.list_prefix(unit["prefix"], unit["recursive"]):
            report(progress, "listed", block.num_rows)
            yield block
