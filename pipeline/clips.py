"""Labelled clips for training and evaluation: a corpus decoded once by Ray Data, optionally cached.

Clips come from the very decoding inference uses (`segments.decode_video`: the whole video, or one
clip per window of `window_seconds`; a labelled segment: its one window, cut as the scan cut it),
so training and serving see identical frames. Rows are `uri`,
`label` (class name), `segment` (window index), `seconds` (its span) and `clip` (the raw uint8 bytes
of a [T, H, W, 3] array).

The clip cache is Parquet under CACHE_URI/<key>/. The key hashes everything that decides the
clips: the sampling settings and each video's URI, label and ETag (or size+mtime fingerprint), so a
changed video, label or setting gets a new key and a stale cache is never read. A cache directory
counts only once its manifest, written last, exists: a crash mid-write leaves no usable half-cache.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from .corpus import LabelledVideo
from .frames import DEFAULT_DECODER
from .errors import InvalidInput
from .segments import clip_arrays, decode_video
from .storage import arrow_destination, filesystem, fingerprint

# Bump when the clips (or the cache rows) for the same input change; v2: rows carry `seconds`.
SAMPLING = "sample_clip/uniform/v2"
MANIFEST = "manifest.json"


@dataclass
class DecodedClips:
    """A materialized Ray dataset of decodable clips, and the videos that could not be decoded."""

    dataset: object  # ray.data.Dataset (materialized)
    count: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache: str | None = None  # "hit", "written" or None (no cache asked)
    median_seconds: float | None = None  # the median time span of the clips (None: unknown)


def with_fingerprints(videos: Sequence[LabelledVideo]) -> list[LabelledVideo]:
    """Fill in missing ETags (manifest rows) by asking the store, a few requests at a time."""
    missing = [video for video in videos if not video.etag]
    if not missing:
        return list(videos)
    with ThreadPoolExecutor(max_workers=16) as pool:
        etags = dict(zip((v.uri for v in missing),
                         pool.map(lambda v: fingerprint(v.uri), missing)))
    return [video if video.etag else replace(video, etag=etags[video.uri]) for video in videos]


def dataset_fingerprint(videos: Sequence[LabelledVideo]) -> str:
    """A short hash of the videos' URIs, labels and ETags (and the segment of a labelled
    segment): which data a model was trained on."""
    digest = hashlib.sha256()
    for video in sorted(videos, key=lambda v: (v.uri, -1 if v.segment is None else v.segment)):
        span = "" if video.segment is None else f"\0{video.segment}\0{video.window_seconds!r}"
        digest.update(f"{video.uri}\0{video.label}\0{video.etag}{span}\n".encode())
    return digest.hexdigest()[:16]


def video_digests(videos: Sequence[LabelledVideo]) -> tuple[str, ...]:
    """One short hash per video (URI and ETag), sorted: what a checkpoint keeps of its training
    videos, enough to tell whether other data overlaps them without listing them."""
    return tuple(sorted({hashlib.sha256(f"{v.uri}\0{v.etag}".encode()).hexdigest()[:12]
                         for v in videos}))


def cache_key(videos: Sequence[LabelledVideo], frames: int, size: int,
              window_seconds: float | None = None, decoder: str = DEFAULT_DECODER) -> str:
    settings = f"{SAMPLING}:{frames}x{size}x{size}:window={window_seconds}"
    if decoder != DEFAULT_DECODER:  # the backends agree on the test videos, not provably on all
        settings += f":decoder={decoder}"
    return hashlib.sha256(f"{settings}:{dataset_fingerprint(videos)}".encode()).hexdigest()[:20]


def decode_labelled(videos: Sequence[LabelledVideo], frames: int, size: int,
                    cache_uri: str | None = None, window_seconds: float | None = None,
                    decoder: str = DEFAULT_DECODER) -> DecodedClips:
    """Decode every video once (Ray Data tasks, in parallel); bad videos are skipped, not fatal.
    `decoder`: one of frames.DECODERS."""
    import ray

    videos = with_fingerprints(videos) if cache_uri else list(videos)
    cache_dir = (posixpath.join(cache_uri.rstrip("/"), cache_key(videos, frames, size, window_seconds,
                                                                  decoder))
                 if cache_uri else None)
    if cache_dir and (cached := _read_cache(cache_dir)) is not None:
        return cached
    if not videos:
        raise InvalidInput("no videos to decode")
    cpus = int(ray.cluster_resources().get("CPU", 1))
    decoded = (
        ray.data.from_items([{"uri": v.uri, "label": v.label, "span_segment": v.segment,
                              "span_window": v.window_seconds} for v in videos],
                            override_num_blocks=min(len(videos), max(1, cpus * 4)))
        .flat_map(_decode_rows, fn_kwargs={"frames": frames, "size": size,
                                           "window_seconds": window_seconds, "decoder": decoder})
        .materialize()
    )
    status = decoded.select_columns(["uri", "seconds", "error"]).take_all()
    skipped = sorted({(row["uri"], row["error"]) for row in status if row["error"]})
    seconds = [row["seconds"] for row in status if not row["error"]]
    # Only trainable rows: equal Ray Train shards must not count undecodable videos.
    dataset = decoded.map_batches(_decoded_rows_only, batch_format="pyarrow").materialize()
    count = sum(1 for row in status if not row["error"])
    result = DecodedClips(dataset, count, skipped,
                          median_seconds=float(np.median(seconds)) if seconds else None)
    if cache_dir and count:
        _write_cache(result, cache_dir, frames, size)
        result.cache = "written"
    return result


def to_arrays(dataset, class_names: Sequence[str], frames: int, size: int
              ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(clips uint8 [N, T, H, W, 3], label indices [N], video uri per clip) of a small clip
    dataset or dataset shard."""
    clips, labels, uris = [], [], []
    for batch in dataset.iter_batches(batch_size=256, batch_format="numpy"):
        batch_clips, batch_labels = unpack_batch(batch, class_names, frames, size)
        clips.append(batch_clips)
        labels.append(batch_labels)
        uris.extend(str(uri) for uri in batch["uri"])
    if not clips:
        return np.zeros((0, frames, size, size, 3), np.uint8), np.zeros(0, np.int64), []
    return np.concatenate(clips), np.concatenate(labels), uris


def unpack_batch(batch: dict, class_names: Sequence[str], frames: int | None, size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A numpy batch of clip rows -> (clips uint8 [B, T, H, W, 3], label indices [B]).
    `frames` None: as many as the rows hold (training pools are longer than the model's clips)."""
    if frames is None:
        frames = len(batch["clip"][0]) // (size * size * 3) if len(batch["clip"]) else 1
    clips = clip_arrays(batch["clip"], frames, size)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.asarray([index[str(label)] for label in batch["label"]], np.int64)
    return clips, labels


def _decode_rows(row: dict, frames: int, size: int, window_seconds: float | None,
                 decoder: str = DEFAULT_DECODER) -> list[dict]:
    """flat_map step: one labelled video -> a clip row per window, or one row with an `error`
    (the decoding itself is segments.decode_video, shared with inference). A labelled segment
    (`span_segment`) is cut with its own window length and keeps only its window."""
    video = {"video_uri": row["uri"], "video_etag": "", "video_bytes": 0}
    span, span_window = row.get("span_segment"), row.get("span_window")
    row = {"uri": row["uri"], "label": row["label"]}
    records = decode_video(video, frames, size, span_window if span is not None else window_seconds,
                           decoder=decoder)
    if span is not None and records[0]["error"] is None:
        records = [record for record in records if record["segment"] == span] or [
            {**records[0], "error": f"no segment {span} in the video (it has {len(records)})"}]
    return [{**row, "segment": record["segment"],
             "seconds": (record["end_s"] - record["start_s"]) if record["error"] is None else 0.0,
             "clip": record["clip"], "error": record["error"] or ""}
            for record in records]


def _decoded_rows_only(table):
    import pyarrow.compute as pc

    return table.filter(pc.equal(table["error"], "")).drop_columns(["error"])


def _read_cache(cache_dir: str) -> DecodedClips | None:
    import ray

    fs, path = filesystem(cache_dir)
    try:
        with fs.open(posixpath.join(path, MANIFEST), "r") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return None
    data_path, arrow_fs = arrow_destination(posixpath.join(cache_dir, "data"))
    dataset = ray.data.read_parquet(data_path, filesystem=arrow_fs).materialize()
    skipped = [tuple(pair) for pair in manifest["skipped"]]
    return DecodedClips(dataset, manifest["count"], skipped, cache="hit",
                        median_seconds=manifest.get("median_seconds"))


def _write_cache(clips: DecodedClips, cache_dir: str, frames: int, size: int) -> None:
    fs, path = filesystem(cache_dir)
    if fs.exists(path):  # leftovers of an interrupted write: start clean
        fs.rm(path, recursive=True)
    data_path, arrow_fs = arrow_destination(posixpath.join(cache_dir, "data"))
    clips.dataset.write_parquet(data_path, filesystem=arrow_fs)
    manifest = {"sampling": SAMPLING, "frames": frames, "size": size, "count": clips.count,
                "skipped": clips.skipped, "median_seconds": clips.median_seconds}
    with fs.open(posixpath.join(path, MANIFEST), "w") as handle:
        json.dump(manifest, handle)
