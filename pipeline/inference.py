"""Classification: listing -> frames -> model -> rows -> Parquet.

Each step is a small function or class usable without Ray: `decode_video` turns one listed video
into segment records (or one error record), `Classifier` turns a batch of segment records into
prediction rows, and `classify_sequential` chains them in one process.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .frames import VideoDecodeError, sample_segments
from .model_store import LoadedModel, load_model
from .models import predict_probs
from .rows import error_row, prediction_row, rows_to_table
from .storage import VideoObject, arrow_destination, filesystem, list_videos, read_bytes


def video_record(video: VideoObject) -> dict:
    return {"uri": video.uri, "etag": video.etag, "bytes": video.size}


def decode_video(video: dict, data: bytes | None, num_frames: int, size: int,
                 window_seconds: float | None, timeout_s: float = 120.0) -> list[dict]:
    """One video -> a record per segment (with its clip), or one record with an `error`."""
    try:
        info, segments = sample_segments(data if data is not None else video["uri"],
                                         num_frames=num_frames, size=(size, size),
                                         window_seconds=window_seconds, timeout_s=timeout_s)
    except VideoDecodeError as exc:
        return [{**video, "error": str(exc)}]
    stream = {"duration_s": info.duration_s, "fps": info.fps,
              "width": info.width, "height": info.height}
    return [
        {**video, **stream, "error": None, "index": seg.index, "start_s": seg.start_s,
         "end_s": seg.end_s, "clip": seg.clip}
        for seg in segments
    ]


class Classifier:
    """Loads the model once; maps a list of segment/error records to prediction rows."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu"):
        self.model = loaded.model.to(device).eval()
        self.config = loaded.config
        self.lineage = loaded.lineage
        self.device = device

    def rows(self, records: list[dict]) -> list[dict]:
        """One prediction row per record, in record order; error records become error rows."""
        ok = [r for r in records if r["error"] is None]
        probs = iter(predict_probs(self.model, np.stack([_clip_of(r, self.config) for r in ok]),
                                   batch_size=len(ok)) if ok else [])
        return [
            error_row(r, r["error"], self.lineage) if r["error"] is not None
            else prediction_row(r, r, next(probs), self.config.class_names, self.lineage)
            for r in records
        ]


def _clip_of(record: dict, config) -> np.ndarray:
    """The record's clip: an array in-process, raw bytes once it has crossed Ray Data."""
    clip = record["clip"]
    if isinstance(clip, (bytes, bytearray)):
        return np.frombuffer(clip, np.uint8).reshape(config.frames, config.size, config.size, 3)
    return clip


def classify_sequential(input_uri: str, output_path: str, model_ref: str,
                        window_seconds: float | None = None, batch_size: int = 16,
                        endpoint_url: str | None = None, mlflow_uri: str | None = None) -> dict:
    """The plain one-process loop: list, decode, classify, write one Parquet file."""
    started = time.perf_counter()
    classifier = Classifier(load_model(model_ref, mlflow_uri))
    config = classifier.config
    window_seconds = config.window_seconds(window_seconds)
    rows, pending = [], []
    videos = list_videos(input_uri, endpoint_url)
    for video in videos:
        pending += decode_video(video_record(video), read_bytes(video.uri, endpoint_url),
                                config.frames, config.size, window_seconds)
        if len(pending) >= batch_size:
            rows += classifier.rows(pending)
            pending = []
    rows += classifier.rows(pending)
    fs, path = filesystem(output_path, endpoint_url)
    fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(rows_to_table(rows), handle)
    seconds = time.perf_counter() - started
    errors = sum(row["status"] == "error" for row in rows)
    return {"videos": len(videos), "segments": len(rows) - errors, "errors": errors,
            "wall_s": round(seconds, 3), "videos_per_s": round(len(videos) / seconds, 3),
            "output": output_path}


# --- the distributed engine: Ray Data ---------------------------------------------------------


class TooManyErrors(Exception):
    """More videos failed than the error threshold allows; the rows were still written."""


def _decode_for_ray(video: dict, num_frames: int, size: int, window_seconds: float | None,
                    endpoint_url: str | None) -> list[dict]:
    """flat_map step: read one object and decode it; clips travel as bytes (fixed schema)."""
    import ray

    try:
        data = read_bytes(video["uri"], endpoint_url)
        records = decode_video(video, data, num_frames, size, window_seconds)
    except VideoDecodeError as exc:
        records = [{**video, "error": str(exc)}]
    except Exception as exc:  # a storage failure on one object costs one error row
        records = [{**video, "error": f"cannot read input: {type(exc).__name__}"}]
    node = ray.get_runtime_context().get_node_id()
    empty = {"index": 0, "start_s": None, "end_s": None, "duration_s": None, "fps": None,
             "width": None, "height": None}
    return [
        {**empty, **record, "clip": record["clip"].tobytes() if "clip" in record else b"",
         "decode_node": node}
        for record in records
    ]


class ClassifierActor:
    """map_batches step: loads the model once per actor, turns segment batches into rows."""

    def __init__(self, checkpoint: bytes, lineage, device: str = "cpu"):
        import ray

        from .model_store import from_checkpoint_bytes

        torch.set_num_threads(1)  # one CPU per actor: parallelism comes from the actor pool
        self.classifier = Classifier(from_checkpoint_bytes(checkpoint, lineage), device)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist()
        table = rows_to_table(self.classifier.rows(records))
        nodes = pa.array([f"{r['decode_node']},{self.node}" for r in records], pa.string())
        return table.append_column("_nodes", nodes)


def classify(input_uri: str, output_uri: str, model_ref: str, *, window_seconds: float | None = None,
             batch_size: int = 16, num_actors: int | None = None, error_threshold: float = 0.5,
             endpoint_url: str | None = None, mlflow_uri: str | None = None,
             ray_address: str | None = None) -> dict:
    """Ray Data: listing -> read + decode (tasks) -> classifier actors -> Parquet files in OUTPUT.

    `window_seconds`: None = the model's training clip duration, 0 = whole videos.
    Streaming: decoded clips flow in bounded batches from decode tasks to the actor pool while
    rows (small) are written as Parquet. Raises TooManyErrors after writing when the share of
    unreadable videos exceeds `error_threshold`.
    """
    import ray

    from .ray_runtime import cluster_has_gpus, ensure_ray

    started = time.perf_counter()
    loaded = load_model(model_ref, mlflow_uri)  # resolve the REF once, ship the bytes
    videos = list_videos(input_uri, endpoint_url)
    if not videos:
        raise FileNotFoundError(f"no videos found under {input_uri}")
    ensure_ray(ray_address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = cluster_has_gpus()
    actors = num_actors or (int(ray.cluster_resources().get("GPU", 1)) if gpus else max(1, cpus // 2))
    config = loaded.config
    window_seconds = config.window_seconds(window_seconds)

    rows = (
        ray.data.from_items([video_record(v) for v in videos],
                            override_num_blocks=min(len(videos), max(1, cpus * 4)))
        .flat_map(_decode_for_ray, fn_kwargs={
            "num_frames": config.frames, "size": config.size,
            "window_seconds": window_seconds, "endpoint_url": endpoint_url})
        .map_batches(ClassifierActor, batch_size=batch_size, batch_format="pyarrow",
                     compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                     fn_constructor_kwargs={"checkpoint": loaded.checkpoint,
                                            "lineage": loaded.lineage,
                                            "device": "cuda" if gpus else "cpu"},
                     num_cpus=1, num_gpus=1 if gpus else 0)
        .materialize()  # rows only (no clips): small, and lets us count after writing
    )
    path, fs = arrow_destination(output_uri, endpoint_url)
    rows.drop_columns(["_nodes"]).write_parquet(path, filesystem=fs, min_rows_per_file=10_000)
    stats = rows.select_columns(["status", "video_uri", "_nodes"]).to_arrow_refs()
    status = pa.concat_tables(ray.get(stats))
    errors = status.filter(pc.equal(status["status"], "error")).num_rows
    nodes = sorted({node for pair in status["_nodes"].to_pylist() for node in pair.split(",")})
    seconds = time.perf_counter() - started
    summary = {"videos": len(videos), "segments": status.num_rows - errors, "errors": errors,
               "wall_s": round(seconds, 3), "videos_per_s": round(len(videos) / seconds, 3),
               "output": output_uri, "nodes": nodes, "model_name": loaded.lineage.model_name,
               "model_version": loaded.lineage.model_version}
    if errors / len(videos) > error_threshold:
        raise TooManyErrors(f"{errors} of {len(videos)} videos could not be read "
                            f"(threshold {error_threshold:.0%}); rows written to {output_uri}")
    return summary
