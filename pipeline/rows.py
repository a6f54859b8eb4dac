"""Prediction rows: the Parquet schema analysts read, and the functions that build its rows.

One row per (video, segment); an unreadable video gets exactly one row with status 'error'.
The schema is the contract in DESIGN.md; every writer goes through `PREDICTION_SCHEMA`, or
`prediction_schema(embeddings=False)` for a run that leaves the embeddings out (--no-embeddings);
outputs written before the column existed lack it too (DuckDB: union_by_name).

`embedding` is the model's clip representation, L2-normalised: as many float32 as the model's
head is wide (128 for the default model; models.ActionClassifier.embedding_size), the same for
every ok row of a model, null on error rows. Its Arrow type is a variable `list<float32>`, not a
`fixed_size_list`: Parquet has no fixed-size list (DuckDB reads either as FLOAT[] and casts to
FLOAT[N] for array_cosine_similarity), and pyarrow (25) cannot read back a Parquet file whose
fixed-size list column has nulls (apache/arrow#35692), so error rows would make the output
unreadable to pyarrow and Ray Data. One type also keeps one schema for every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PREDICTION_SCHEMA = pa.schema([
    ("video_uri", pa.string()),
    ("video_etag", pa.string()),
    ("video_bytes", pa.int64()),
    ("segment", pa.int32()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("label", pa.string()),
    ("label_index", pa.int32()),
    ("score", pa.float32()),
    ("top_labels", pa.list_(pa.string())),
    ("top_scores", pa.list_(pa.float32())),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("embedding", pa.list_(pa.float32())),  # see above: one width per model, null on error
    ("mlflow_run_id", pa.string()),
    ("decoded_on", pa.string()),  # 'cpu' or 'nvdec' (segments.decoded_on)
    ("status", pa.string()),
    ("error", pa.string()),
    ("processed_at", pa.timestamp("us", tz="UTC")),
])
EMBEDDING = "embedding"


def prediction_schema(embeddings: bool = True) -> pa.Schema:
    """The rows' schema: PREDICTION_SCHEMA, without `embedding` when `embeddings` is False."""
    if embeddings:
        return PREDICTION_SCHEMA
    return PREDICTION_SCHEMA.remove(PREDICTION_SCHEMA.get_field_index(EMBEDDING))


@dataclass(frozen=True)
class Lineage:
    """Which model wrote a row."""

    model_name: str
    model_version: str
    mlflow_run_id: str | None = None


def prediction_row(record: dict, probs: np.ndarray, class_names: tuple[str, ...],
                   lineage: Lineage, top_k: int, embedding: np.ndarray | None = None) -> dict:
    """An 'ok' row for a segment record (segments.SEGMENT_SCHEMA); `probs` are the class
    probabilities for that segment, `embedding` its normalised representation (None: the run
    writes none); `top_k`: models.TOP_K (passed in, so that this module and the Ray Data steps
    that write rows never import torch)."""
    order = np.argsort(-probs, kind="stable")[: min(top_k, len(class_names))]
    best = int(order[0])
    return {
        **_video_columns(record),
        "segment": record["segment"],
        "start_s": record["start_s"],
        "end_s": record["end_s"],
        "label": class_names[best],
        "label_index": best,
        "score": float(probs[best]),
        "top_labels": [class_names[i] for i in order],
        "top_scores": [float(probs[i]) for i in order],
        "duration_s": record["duration_s"],
        "fps": record["fps"],
        "width": record["width"],
        "height": record["height"],
        **_lineage_columns(lineage),
        EMBEDDING: embedding,
        "decoded_on": record.get("decoded_on"),
        "status": "ok",
        "error": None,
        "processed_at": datetime.now(timezone.utc),
    }


def error_row(record: dict, reason: str, lineage: Lineage) -> dict:
    """The one row an unreadable video gets: segment 0, no prediction, the reason."""
    return {
        **_video_columns(record),
        "segment": 0,
        "start_s": None,
        "end_s": None,
        "label": None,
        "label_index": None,
        "score": None,
        "top_labels": None,
        "top_scores": None,
        "duration_s": None,
        "fps": None,
        "width": None,
        "height": None,
        **_lineage_columns(lineage),
        "decoded_on": record.get("decoded_on"),
        "status": "error",
        "error": reason,
        "processed_at": datetime.now(timezone.utc),
    }


def parquet_options(schema: pa.Schema) -> dict:
    """pyarrow.parquet.write_table options for rows of `schema`: dictionary encoding for every
    column but `embedding`, whose floats never repeat (its dictionary page, tried and dropped,
    made the column 45% larger: 741 against 516 bytes a row at 128 floats)."""
    return {"use_dictionary": [f"{field.name}.list.element" if pa.types.is_list(field.type)
                               else field.name for field in schema if field.name != EMBEDDING]}


def first_rows(rows: pa.Table) -> pa.ChunkedArray:
    """Mask of the one row per video among prediction or segment rows: segment 0 (a video that
    could not be read has only that row). Counting videos means counting these."""
    return pc.equal(rows["segment"], 0)


def is_first_row(row: dict) -> bool:
    """`first_rows` for one row as a dict."""
    return row["segment"] == 0


def rows_to_table(rows: list[dict], schema: pa.Schema = PREDICTION_SCHEMA) -> pa.Table:
    """Rows as a table of `schema` (a prediction_schema: columns it lacks are dropped, missing
    ones are null, as error rows' embedding)."""
    return pa.Table.from_pylist(rows, schema=schema)


def _video_columns(record: dict) -> dict:
    return {key: record[key] for key in ("video_uri", "video_etag", "video_bytes")}


def _lineage_columns(lineage: Lineage) -> dict:
    return {
        "model_name": lineage.model_name,
        "model_version": lineage.model_version,
        "mlflow_run_id": lineage.mlflow_run_id,
    }
