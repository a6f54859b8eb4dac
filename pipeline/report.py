"""`vidpipe report`: one self-contained HTML page of an OUTPUT's scans, to open from disk or S3.

Every number comes from DuckDB over the Parquet rows and the `_runs/` records (results.py; the
queries are the constants below, also in the README); plots are matplotlib (Agg) PNGs and the
frame grabs are PNGs too, all inline as base64, so the page needs nothing beside itself. The same
numbers are in the page as JSON (`<script type="application/json" id="report-data">`) for
machines, and in tables for people.

Sections: class share per scan date; drift (total variation distance of the class shares
against the scan before) per run; errors and retries per run; videos/s per run; the score
histogram; the least certain segments (uncertain.py), each with its window's middle frame,
decoded by the project's decoder (frames.sample_segments over that very window).
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone

from . import storage
from .frame_plan import window_of_segment
from .results import open_output
from .uncertain import uncertain_segments

CLASS_SHARE_SQL = """
select scan_date, label, count(*) as segments,
       count(*) / sum(count(*)) over (partition by scan_date) as share
from predictions where status = 'ok'
group by scan_date, label order by scan_date, label
"""
RUNS_SQL = """
select run_id, kind, run_date, processed, errors, retry, videos_per_s, drift_tvd, wall_s
from runs order by run_id
"""
HISTOGRAM_BINS = 20
SCORE_HISTOGRAM_SQL = f"""
select least(floor(score * {HISTOGRAM_BINS}), {HISTOGRAM_BINS - 1})::integer as bin,
       count(*) as segments
from predictions where status = 'ok'
group by bin order by bin
"""
TOTALS_SQL = """
select count(*) as rows, count(distinct video_uri) as videos,
       count(*) filter (where status = 'error') as error_rows
from predictions
"""
FRAME_WIDTH = 192  # pixels of a frame grab's width; its height keeps the video's aspect


def report_data(output: str, segments: int) -> dict:
    """Every number the page shows, from DuckDB."""
    connection = open_output(output)
    data = {"output": output, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for name, sql in (("totals", TOTALS_SQL), ("class_share", CLASS_SHARE_SQL),
                      ("runs", RUNS_SQL), ("score_histogram", SCORE_HISTOGRAM_SQL)):
        result = connection.execute(sql)
        columns = [column[0] for column in result.description]
        data[name] = [dict(zip(columns, _plain(row))) for row in result.fetchall()]
    data["totals"] = data["totals"][0]
    data["uncertain"] = [
        {key: _plain_value(segment[key]) for key in
         ("video_uri", "segment", "start_s", "end_s", "label", "score", "margin", "scan_date")}
        for segment in uncertain_segments(output, segments)]
    return data


def write_report(output: str, out: str, segments: int = 8) -> dict:
    """Write the page to `out` (path or URI); the summary."""
    data = report_data(output, segments)
    grabs = [middle_frame(segment) for segment in data["uncertain"]]
    page = render(data, grabs)
    storage.write_bytes(out, page.encode())
    return {"output": output, "out": out, "runs": len(data["runs"]),
            "rows": data["totals"]["rows"], "uncertain": len(data["uncertain"]),
            "frames": sum(1 for grab in grabs if grab[0]), "bytes": len(page.encode())}


def middle_frame(segment: dict) -> tuple[str | None, str]:
    """(PNG as base64, or None, and the reason) of the middle frame of a segment's window."""
    from .frames import sample_segments

    try:
        window = window_of_segment(segment["segment"], segment["start_s"], segment["end_s"])
        with storage.open_video(segment["video_uri"]) as source:
            # Three frames over the window: first, middle, last (frame_plan.sample_indices).
            info, found = sample_segments(source, num_frames=3, size=(FRAME_WIDTH, FRAME_WIDTH),
                                          window_seconds=window)
        clip = next(s.clip for s in found if s.index == segment["segment"])
    except Exception as exc:  # the page still shows the row, saying why there is no picture
        return None, f"no frame: {type(exc).__name__}: {exc}"[:200]
    height = max(1, round(FRAME_WIDTH * info.height / info.width)) if info.width else FRAME_WIDTH
    return _png(_resize(clip[1], height)), ""


def render(data: dict, grabs: list[tuple[str | None, str]]) -> str:
    figures = {
        "class-share": _class_share_figure(data["class_share"]),
        "drift": _runs_figure(data["runs"], [("drift_tvd", "drift (TVD)")], "drift per run"),
        "errors": _runs_figure(data["runs"], [("errors", "errors"), ("retry", "retries")],
                               "errors and retries per run", bars=True),
        "throughput": _runs_figure(data["runs"], [("videos_per_s", "videos/s")],
                                   "videos/s per run"),
        "scores": _histogram_figure(data["score_histogram"]),
    }
    title = f"vidpipe report: {data['output']}"
    totals = data["totals"]
    parts = [
        "<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style>", "</head><body>", f"<h1>{_e(title)}</h1>",
        f"<p>{totals['rows']} rows, {totals['videos']} videos, {totals['error_rows']} error rows, "
        f"{len(data['runs'])} runs; generated {_e(data['generated_at'])}.</p>",
        "<h2>Class share per scan date</h2>", _img(figures["class-share"], "class share"),
        _table(data["class_share"], ("scan_date", "label", "segments", "share"), "class-share"),
        "<h2>Runs: drift, errors and retries, videos/s</h2>",
        _img(figures["drift"], "drift per run"), _img(figures["errors"], "errors per run"),
        _img(figures["throughput"], "videos/s per run"),
        _table(data["runs"], ("run_id", "kind", "run_date", "processed", "errors", "retry",
                              "videos_per_s", "drift_tvd", "wall_s"), "runs"),
        "<h2>Scores</h2>", _img(figures["scores"], "score histogram"),
        _table(data["score_histogram"], ("bin", "segments"), "score-histogram"),
        "<h2>Least certain segments</h2>", _uncertain(data["uncertain"], grabs),
        "<script type='application/json' id='report-data'>"
        + json.dumps(data, default=str).replace("</", "<\\/") + "</script>",
        "</body></html>"]
    return "\n".join(parts)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;
font-size:13px}img{margin:4px}.segments td{vertical-align:top}"""


# --- plots (matplotlib, Agg) ---------------------------------------------------------------------


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 3.2), dpi=80)


def _save(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _class_share_figure(rows: list[dict]) -> str:
    fig, axes = _figure()
    dates = sorted({str(row["scan_date"]) for row in rows})
    labels = sorted({row["label"] for row in rows})
    share = {(str(row["scan_date"]), row["label"]): row["share"] for row in rows}
    bottom = [0.0] * len(dates)
    for label in labels:
        heights = [share.get((day, label), 0.0) for day in dates]
        axes.bar(dates, heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.set_ylabel("share of segments")
    axes.set_title("class share per scan date")
    if labels:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig)


def _runs_figure(runs: list[dict], series: list[tuple[str, str]], title: str,
                 bars: bool = False) -> str:
    """One value (or a group of bars) per run, in run order; a run without a value (the first
    scan's drift) has no point."""
    fig, axes = _figure()
    positions = range(len(runs))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        if bars:
            axes.bar([x + (i - (len(series) - 1) / 2) * width for x in positions],
                     [run[key] or 0 for run in runs], width=width, label=label)
        else:
            points = [(x, run[key]) for x, run in zip(positions, runs) if run[key] is not None]
            if points:
                axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
            else:  # e.g. drift: a single scan, or classify runs, have nothing to compare with
                axes.text(0.5, 0.5, f"no {label} recorded", transform=axes.transAxes,
                          ha="center", color="grey")
    axes.set_xticks(list(positions), [run["run_id"][:16] for run in runs], rotation=20,
                    fontsize=7)
    axes.set_xlim(-0.5, max(len(runs) - 0.5, 0.5))
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)
    return _save(fig)


def _histogram_figure(bins: list[dict]) -> str:
    fig, axes = _figure()
    axes.bar([(row["bin"] + 0.5) / HISTOGRAM_BINS for row in bins],
             [row["segments"] for row in bins], width=1 / HISTOGRAM_BINS, edgecolor="white")
    axes.set_xlim(0, 1)
    axes.set_xlabel("top-1 score")
    axes.set_ylabel("segments")
    axes.set_title("score histogram")
    return _save(fig)


# --- HTML pieces ---------------------------------------------------------------------------------


def _img(png: str, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{png}'>"


def _table(rows: list[dict], columns: tuple[str, ...], name: str) -> str:
    head = "".join(f"<th>{_e(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td data-column='{column}'>{_e(_shown(row[column]))}</td>"
                         for column in columns) + "</tr>" for row in rows)
    return f"<table data-table='{name}'><tr>{head}</tr>{body}</table>"


def _uncertain(segments: list[dict], grabs: list[tuple[str | None, str]]) -> str:
    if not segments:
        return "<p>No ok segments.</p>"
    rows = []
    for segment, (png, reason) in zip(segments, grabs):
        picture = _img(png, "middle frame") if png else f"<em>{_e(reason)}</em>"
        rows.append(
            f"<tr><td>{picture}</td><td>{_e(segment['video_uri'])}<br>segment "
            f"{segment['segment']}: {segment['start_s']:.2f}-{segment['end_s']:.2f} s<br>"
            f"predicted {_e(segment['label'])} ({segment['score']:.3f}), margin "
            f"{segment['margin']:.3f}</td></tr>")
    return "<table class='segments' data-table='uncertain'>" + "".join(rows) + "</table>"


def _png(frame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    plt.imsave(buffer, frame, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def _resize(frame, height: int):
    """Nearest-neighbour rows: the grab is decoded square (FRAME_WIDTH), shown at the video's
    aspect ratio."""
    import numpy as np

    rows = np.round(np.linspace(0, frame.shape[0] - 1, height)).astype(int)
    return frame[rows]


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _plain(row: tuple) -> tuple:
    return tuple(_plain_value(value) for value in row)


def _plain_value(value):
    """JSON-ready: dates as ISO text, numpy/decimal numbers as Python numbers."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def _e(text) -> str:
    return html.escape(str(text), quote=True)
