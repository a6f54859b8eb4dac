"""Classification: listing -> frames -> model -> rows -> Parquet.

Each step is a small function or class usable without Ray: `decode_video` turns one listed video
into segment records (or one error record), `Classifier` turns a batch of segment records into
prediction rows, and `classify_sequential` chains them in one process.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from .frames import VideoDecodeError, sample_segments
from .model_store import LoadedModel, load_model
from .rows import error_row, prediction_row, rows_to_table
from .storage import VideoObject, filesystem, list_videos, read_bytes


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

    @torch.no_grad()
    def probabilities(self, clips: np.ndarray) -> np.ndarray:
        from .models import clips_to_tensor

        logits = self.model(clips_to_tensor(clips).to(self.device))
        return torch.softmax(logits, dim=1).cpu().numpy()

    def rows(self, records: list[dict]) -> list[dict]:
        ok = [r for r in records if r["error"] is None]
        probs = self.probabilities(np.stack([r["clip"] for r in ok])) if ok else []
        rows = [prediction_row(r, r, p, self.config.class_names, self.lineage)
                for r, p in zip(ok, probs)]
        rows += [error_row(r, r["error"], self.lineage) for r in records if r["error"] is not None]
        return rows


def classify_sequential(input_uri: str, output_path: str, model_ref: str,
                        window_seconds: float | None = None, batch_size: int = 16,
                        endpoint_url: str | None = None, mlflow_uri: str | None = None) -> dict:
    """The plain one-process loop: list, decode, classify, write one Parquet file."""
    started = time.perf_counter()
    classifier = Classifier(load_model(model_ref, mlflow_uri))
    config = classifier.config
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
