""""Like this one": the k segments nearest a given segment by the cosine similarity of their
embeddings (rows' `embedding`), computed in DuckDB over OUTPUT's Parquet files.

Reads only the Parquet (a classify OUTPUT's `*.parquet`, or a scan OUTPUT's
`predictions/**/*.parquet`), never the pipeline's internals; files written without embeddings
(--no-embeddings, or before the column existed) are read by name (`union_by_name`) and their
rows skipped. Only rows of the query's own model are compared: another model's embeddings live
in another space. DuckDB reads S3 through the same fsspec filesystem as the rest of vidpipe
(storage.filesystem: the AWS credential chain, --s3-endpoint-url), registered with the
connection, so no DuckDB extension (httpfs is a download) and no secret is involved. The search
is one scan of the Parquet inside DuckDB: no row reaches Python but the k it returns.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from . import storage
from .errors import InvalidInput

# The query rows' columns: the query segment's row, then its neighbours.
QUERY_SQL = """
select segment, status, embedding is not null as embedded, len(embedding) as width,
       model_name, model_version, embedding
from read_parquet($files, union_by_name = true)
where video_uri = $video_uri
order by segment, processed_at desc
"""

# The search, for analysts to adapt (README "Analysing the results"). $query is the query
# segment's embedding; N, its width, must be a constant in a cast, so it is written in.
NEAREST_SQL = """
select video_uri, segment, start_s, end_s, label, score,
       array_cosine_similarity(embedding::FLOAT[{width}], $query::FLOAT[{width}]) as similarity
from read_parquet($files, union_by_name = true)
where status = 'ok' and embedding is not null
  and model_name = $model_name and model_version = $model_version
  and not (video_uri = $video_uri and segment = $segment)
order by similarity desc
limit $k
"""


@dataclass(frozen=True)
class Neighbour:
    video_uri: str
    segment: int
    start_s: float
    end_s: float
    label: str
    score: float
    similarity: float


def predictions_glob(output: str) -> str:
    """The Parquet files of OUTPUT's predictions, as DuckDB reads them: a scan's partitions,
    else classify's files."""
    fs, root = storage.filesystem(output)
    pattern = (f"{root}/predictions/**/*.parquet" if fs.isdir(f"{root}/predictions")
               else f"{root}/*.parquet")
    if not fs.glob(pattern):
        raise InvalidInput(f"no predictions under {output} (expected *.parquet or "
                           "predictions/scan_date=*/*.parquet)")
    return pattern if storage.is_local(output) else fs.unstrip_protocol(pattern)


def connect(output: str):
    """A DuckDB connection that reads OUTPUT: local files natively, anything else (S3) through
    vidpipe's fsspec filesystem for it."""
    import duckdb

    connection = duckdb.connect()
    if not storage.is_local(output):
        connection.register_filesystem(storage.filesystem(output)[0])
    return connection


def similar(output: str, video_uri: str, segment: int = 0, k: int = 10) -> dict:
    """The query segment and its `k` nearest segments (most similar first) in OUTPUT.
    InvalidInput with one line when OUTPUT has no predictions or no embeddings, VIDEO_URI is
    not in it, or has no such segment or no embedding for it."""
    files = predictions_glob(output)
    connection = connect(output)
    columns = [name for name, *_ in connection.execute(
        "describe select * from read_parquet($files, union_by_name = true)",
        {"files": files}).fetchall()]
    if "embedding" not in columns:
        raise InvalidInput(f"the predictions under {output} have no embeddings (written with "
                           "--no-embeddings or by an older vidpipe); classify or scan again")
    video_uri = _as_listed(video_uri)
    rows = connection.execute(QUERY_SQL, {"files": files, "video_uri": video_uri}).fetchall()
    if not rows:
        raise InvalidInput(f"{video_uri} is not in the predictions under {output}")
    chosen = [row for row in rows if row[0] == segment]
    if not chosen:
        have = sorted({row[0] for row in rows})
        raise InvalidInput(f"{video_uri} has no segment {segment} (it has segments "
                           f"{_ranges(have)})")
    _, status, embedded, width, model_name, model_version, embedding = chosen[0]
    if status != "ok":
        raise InvalidInput(f"{video_uri} could not be read when it was classified: it has no "
                           "embedding")
    if not embedded:
        raise InvalidInput(f"{video_uri} segment {segment} was classified without embeddings "
                           "(--no-embeddings)")
    found = connection.execute(NEAREST_SQL.format(width=int(width)), {
        "files": files, "query": embedding, "model_name": model_name,
        "model_version": model_version, "video_uri": video_uri, "segment": segment, "k": k,
    }).fetchall()
    neighbours = [Neighbour(*row) for row in found]
    return {"output": output, "video_uri": video_uri, "segment": segment,
            "model_name": model_name, "model_version": model_version, "k": k,
            "neighbours": [asdict(n) for n in neighbours]}


def _as_listed(uri: str) -> str:
    """VIDEO_URI as listings write it (a local path becomes file:///absolute/path)."""
    fs, path = storage.filesystem(uri)
    return fs.unstrip_protocol(os.path.abspath(path) if storage.is_local(uri) else path)


def _ranges(values: list[int]) -> str:
    return f"{values[0]}-{values[-1]}" if len(values) > 1 else str(values[0])
