"""`vidpipe export-uncertain`: the segments the model is least sure of, out for labelling.

Uncertainty is the margin between the top two class probabilities (`top_scores[1] -
top_scores[2]`; a model with one class has margin = its score). Among the ok rows of each video's
latest version (the ETag processed last), each video's least certain segment comes first, so the
export holds one segment per video while there are videos enough, then seconds, and so on. All of
it is one DuckDB query over the Parquet (`UNCERTAIN_SQL`, also in the README).

Two formats:
- `label-studio`: Label Studio's import JSON, a list of tasks. `data` holds the video URI and the
  segment's span; `predictions` holds the model's label as a `choices` result with the model's
  score, which Label Studio's Data Manager sorts by. The labelling config it fits is
  LABEL_STUDIO_CONFIG.
- `manifest`: CSV with uri, start_s, end_s, predicted, score, label (empty, for a person to fill)
  and segment; once filled, `vidpipe train DATA --labels FILE` trains on those segments
  (corpus.read_labels).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date

from . import storage
from .errors import InvalidInput
from .results import open_output

FORMATS = ("label-studio", "manifest")
MANIFEST_COLUMNS = ("uri", "start_s", "end_s", "predicted", "score", "label", "segment")

# `since`: a scan_date lower bound (inclusive) or NULL; `limit`: how many segments.
UNCERTAIN_SQL = """
with latest as (  -- each video's version processed last
    select video_uri, arg_max(video_etag, processed_at) as video_etag
    from predictions where status = 'ok' group by video_uri
), scored as (
    select p.video_uri, p.segment, p.start_s, p.end_s, p.label, p.score, p.model_name,
           p.model_version, p.scan_date,
           p.top_scores[1] - coalesce(p.top_scores[2], 0) as margin
    from predictions p join latest using (video_uri, video_etag)
    where p.status = 'ok' and ($since is null or p.scan_date >= $since)
)
select *, row_number() over (partition by video_uri order by margin, segment) as rank_in_video
from scored
order by rank_in_video, margin, video_uri, segment
limit $limit
"""

LABEL_STUDIO_CONFIG = """<View>
  <Video name="video" value="$video"/>
  <Header value="$start_s s to $end_s s"/>
  <Choices name="action" toName="video" choice="single">
    <!-- one <Choice value="..."/> per class -->
  </Choices>
</View>"""


def uncertain_segments(output: str, limit: int, since: date | None = None) -> list[dict]:
    """The `limit` least certain segments of OUTPUT (UNCERTAIN_SQL), least certain first."""
    connection = open_output(output)
    result = connection.execute(UNCERTAIN_SQL, {"since": since, "limit": limit})
    columns = [column[0] for column in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def label_studio_tasks(segments: list[dict]) -> list[dict]:
    """Label Studio import tasks: the segment as data, the model's label as a prediction."""
    return [{
        "data": {"video": segment["video_uri"], "segment": segment["segment"],
                 "start_s": segment["start_s"], "end_s": segment["end_s"],
                 "margin": round(float(segment["margin"]), 6)},
        "predictions": [{
            "model_version": f"{segment['model_name']}:{segment['model_version']}",
            "score": round(float(segment["score"]), 6),
            "result": [{"from_name": "action", "to_name": "video", "type": "choices",
                        "value": {"choices": [segment["label"]]}}],
        }],
    } for segment in segments]


def manifest_csv(segments: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for segment in segments:
        writer.writerow([segment["video_uri"], segment["start_s"], segment["end_s"],
                         segment["label"], round(float(segment["score"]), 6), "",
                         segment["segment"]])
    return out.getvalue()


def export_uncertain(output: str, out: str, limit: int = 100, since: date | None = None,
                     format: str = "label-studio") -> dict:
    """Write the export to `out` (a path or URI); the summary. InvalidInput when nothing
    qualifies (no ok rows, or none since `since`)."""
    if format not in FORMATS:
        raise InvalidInput(f"unknown format {format}; one of {', '.join(FORMATS)}")
    segments = uncertain_segments(output, limit, since)
    if not segments:
        after = f" since {since.isoformat()}" if since else ""
        raise InvalidInput(f"nothing to export: no ok segments in {output}{after}")
    if format == "manifest":
        data = manifest_csv(segments).encode()
    else:
        data = json.dumps(label_studio_tasks(segments), indent=1).encode()
    storage.write_bytes(out, data)
    return {"output": output, "out": out, "format": format, "segments": len(segments),
            "videos": len({segment["video_uri"] for segment in segments}),
            "max_margin": round(max(float(s["margin"]) for s in segments), 6)}
