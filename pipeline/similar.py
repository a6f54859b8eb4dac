""""Like this one": the k segments nearest a given segment by the cosine similarity of their
embeddings (rows' `embedding`), computed in DuckDB over OUTPUT's Parquet.

Reads OUTPUT as every analysis command does (results.open_output: the `predictions` view over
a scan's or a classify's Parquet, by column name, S3 through vidpipe's own fsspec filesystem),
never the pipeline's internals. Rows written without embeddings (--no-embeddings, or before
the column existed) are skipped. Only rows of the query's own model are compared: another
model's embeddings live in another space. The search is one scan of the Parquet inside DuckDB:
no row reaches Python but the k it returns.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from . import storage
from .errors import InvalidInput
from .results import open_output

# The query segment's rows (its versions, newest first), then its neighbours.
QUERY_SQL = """
select segment, status, embedding is not null as embedded, len(embedding) as width,
       model_name, model_version, embedding
from predictions
where video_uri = $video_uri
order by segment, processed_at desc
"""

# The search, for analysts to adapt (README "Analysing the results"). $query is the query
# segment's embedding; N, its width, must be a constant in a cast, so it is written in.
NEAREST_SQL = """
select video_uri, segment, start_s, end_s, label, score,
       array_cosine_similarity(embedding::FLOAT[{width}], $query::FLOAT[{width}]) as similarity
from predictions
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


def similar(output: str, video_uri: str, segment: int = 0, k: int = 10) -> dict:
    """The query segment and its `k` nearest segments (most similar first) in OUTPUT.
    InvalidInput with one line when OUTPUT has no predictions or no embeddings, VIDEO_URI is
    not in it, or has no such segment or no embedding for it."""
    connection = open_output(output)
    columns = [name for name, *_ in connection.execute("describe predictions").fetchall()]
    if "embedding" not in columns:
        raise InvalidInput(f"the predictions in {output} have no embeddings (written with "
                           "--no-embeddings or by an older vidpipe); classify or scan again")
    video_uri = _as_listed(video_uri)
    rows = connection.execute(QUERY_SQL, {"video_uri": video_uri}).fetchall()
    if not rows:
        raise InvalidInput(f"{video_uri} is not in the predictions in {output}")
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
        "query": embedding, "model_name": model_name, "model_version": model_version,
        "video_uri": video_uri, "segment": segment, "k": k,
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
