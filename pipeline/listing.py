"""Listing an archive as a Ray dataset, in tasks: the driver only ever sees folder names.

`listing_dataset(uri)` gives the listed videos (storage.LISTING_SCHEMA) in blocks of about
LISTING_BLOCK_ROWS, for classify and scan. Like segments.py, this module imports no torch: Ray
workers that run only listing or decoding tasks never pay for importing it.
"""

from __future__ import annotations

import pyarrow as pa

from . import storage
from .progress import report


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
    return (
        ray.data.from_items([{"prefix": prefix, "recursive": recursive} for prefix, recursive in units],
                            override_num_blocks=len(units))
        .map_batches(_list_units, batch_size=1, batch_format="pyarrow",
                     fn_kwargs={"progress": progress})
        .repartition(target_num_rows_per_block=storage.LISTING_BLOCK_ROWS)
    )


def _list_units(units: pa.Table, progress=None):
    for unit in units.to_pylist():
        for block in storage.list_prefix(unit["prefix"], unit["recursive"]):
            report(progress, "listed", block.num_rows)
            yield block
