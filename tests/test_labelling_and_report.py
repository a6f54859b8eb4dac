"""What analysts do with a scan OUTPUT: `vidpipe export-uncertain` (segments out for labelling),
`vidpipe train --labels` (labels back in), `vidpipe report` (one HTML page).

One module-wide pair of real scans (a random-weight checkpoint, two scan dates, an undecodable
file) on a local folder, one small scan on S3 (moto on loopback); every expectation is computed
here from the rows and run records themselves (Python over DuckDB's plain rows and the JSON
files), not with the commands' own SQL. The page is opened in Debian's chromium (installed by
fixtures/browser.py where missing); its screenshot goes to /tmp/report-screenshot.png.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from checkpoints import MOTION_CLASSES, untrained_checkpoint
from fixtures.browser import find_chromium, loaded_dom, screenshot
from vidpipe_calls import run_vidpipe

from pipeline.models.checkpoint import load_checkpoint
from pipeline.synthetic import make_corpus

CLASSES = MOTION_CLASSES
WINDOW = 0.75  # synthetic videos last 1.5-3 s: two to four segments each
DATES = ("2026-03-01", "2026-03-02")
SCREENSHOT = Path("/tmp/report-screenshot.png")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("analytics-model") / "model.pt", CLASSES,
                                seed=7, frames=8, size=32)


@pytest.fixture(scope="module")
def scanned(ray_local, checkpoint, bad_videos, tmp_path_factory) -> Path:
    """OUTPUT of two scans: four videos on the first date, four more and a text file on the
    second."""
    root = tmp_path_factory.mktemp("analytics")
    make_corpus(str(root / "made"), per_class=2, groups=1, seed=31)
    videos = sorted((root / "made").glob("*/*.mp4"))
    archive, output = root / "archive", root / "scans"
    for day, batch in zip(DATES, (videos[::2], videos[1::2] + [bad_videos["text"]])):
        for video in batch:
            target = archive / video.parent.name / video.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, target)
        code, record, err = run_vidpipe(["scan", str(archive), str(output), "--model", str(checkpoint),
                                  "--date", day, "--window-seconds", str(WINDOW), "--json"])
        assert code == 0 and record["processed"] == len(batch), err
    return output


def reader_rows(output: Path) -> list[dict]:
    result = duckdb.sql(f"select * from read_parquet('{output}/predictions/**/*.parquet', "
                        f"hive_partitioning=true)")
    return [dict(zip(result.columns, row)) for row in result.fetchall()]


def least_certain(rows: list[dict], since: str | None = None) -> list[tuple[str, int, float]]:
    """(uri, segment, margin) of the ok rows, each video's least certain first, then seconds..."""
    ok = [row for row in rows if row["status"] == "ok"
          and (since is None or str(row["scan_date"]) >= since)]
    by_video: dict[str, list] = {}
    for row in ok:
        scores = row["top_scores"]
        by_video.setdefault(row["video_uri"], []).append(
            (scores[0] - scores[1], row["segment"], row["video_uri"]))
    ranked = []
    for segments in by_video.values():
        ranked += [(rank, margin, uri, segment)
                   for rank, (margin, segment, uri) in enumerate(sorted(segments))]
    return [(uri, segment, margin) for _, margin, uri, segment in sorted(ranked)]


def test_export_uncertain_writes_the_least_certain_segments_one_per_video_first(
        scanned: Path, tmp_path: Path):
    rows = reader_rows(scanned)
    expected = least_certain(rows)
    videos = {row["video_uri"] for row in rows if row["status"] == "ok"}
    assert len(videos) == 8 and len(expected) > len(videos)  # several segments per video

    code, summary, err = run_vidpipe(["export-uncertain", str(scanned), "--out", str(tmp_path / "m.csv"),
                               "--format", "manifest", "--limit", "5", "--json"])
    assert code == 0, err
    manifest = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert list(manifest[0]) == ["uri", "start_s", "end_s", "predicted", "score", "label",
                                 "segment"]
    assert [(m["uri"], int(m["segment"])) for m in manifest] == [e[:2] for e in expected[:5]]
    assert len({m["uri"] for m in manifest}) == 5 and summary["videos"] == 5
    by_key = {(row["video_uri"], row["segment"]): row for row in rows}
    for line in manifest:
        row = by_key[(line["uri"], int(line["segment"]))]
        assert (float(line["start_s"]), float(line["end_s"])) == (row["start_s"], row["end_s"])
        assert line["predicted"] == row["label"] and line["label"] == ""
        assert float(line["score"]) == pytest.approx(row["score"], abs=1e-6)

    # Label Studio: every ok segment (more than asked for: all), one per video first.
    code, summary, err = run_vidpipe(["export-uncertain", str(scanned), "--out",
                               str(tmp_path / "tasks.json"), "--limit", "1000", "--json"])
    assert code == 0 and summary["segments"] == len(expected), err
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert [(t["data"]["video"], t["data"]["segment"]) for t in tasks] == [e[:2] for e in expected]
    assert len({t["data"]["video"] for t in tasks[:8]}) == 8
    for task, (uri, segment, margin) in zip(tasks, expected):
        row = by_key[(uri, segment)]
        prediction = task["predictions"][0]
        assert prediction["score"] == pytest.approx(row["score"], abs=1e-6)
        assert prediction["model_version"] == f"{row['model_name']}:{row['model_version']}"
        assert prediction["result"] == [{"from_name": "action", "to_name": "video",
                                         "type": "choices", "value": {"choices": [row["label"]]}}]
        assert task["data"]["margin"] == pytest.approx(margin, abs=1e-6)
        assert (task["data"]["start_s"], task["data"]["end_s"]) == (row["start_s"], row["end_s"])

    code, summary, err = run_vidpipe(["export-uncertain", str(scanned), "--out", str(tmp_path / "s.json"),
                               "--since", DATES[1], "--limit", "1000", "--json"])
    assert code == 0 and summary["segments"] == len(least_certain(rows, DATES[1])) < len(expected)

    code, _, err = run_vidpipe(["export-uncertain", str(scanned), "--out", str(tmp_path / "none.json"),
                         "--since", "2027-01-01"])
    assert code == 1 and not (tmp_path / "none.json").exists()
    assert err.strip() == (f"vidpipe: error: nothing to export: no ok segments in {scanned} "
                           f"since 2027-01-01")


def test_report_numbers_are_duckdbs_and_the_page_renders_in_chromium(scanned: Path,
                                                                       tmp_path: Path):
    page = tmp_path / "report.html"
    code, summary, err = run_vidpipe(["report", str(scanned), "--out", str(page), "--segments", "4",
                               "--json"])
    assert code == 0, err
    text = page.read_text()
    data = json.loads(re.search(r"<script type='application/json' id='report-data'>(.*?)</script>",
                                text, re.S)[1].replace("<\\/", "</"))
    rows = reader_rows(scanned)
    ok = [row for row in rows if row["status"] == "ok"]

    assert data["totals"] == {"rows": len(rows), "videos": len({r["video_uri"] for r in rows}),
                              "error_rows": len(rows) - len(ok)}
    counts = Counter((str(row["scan_date"]), row["label"]) for row in ok)
    per_date = Counter(str(row["scan_date"]) for row in ok)
    assert {(r["scan_date"], r["label"]): r["segments"] for r in data["class_share"]} == counts
    for share in data["class_share"]:
        assert share["share"] == pytest.approx(share["segments"] / per_date[share["scan_date"]])
    assert sorted(per_date) == list(DATES)

    records = [json.loads(path.read_text()) for path in sorted((scanned / "_runs").glob("*.json"))
               if not path.name.endswith(".intent.json")]
    assert len(records) == 2
    assert [(r["run_id"], r["run_date"], r["processed"], r["errors"], r["retry"])
            for r in data["runs"]] == [(r["run_id"], r["scan_date"], r["processed"], r["errors"],
                                        r["retry"]) for r in records]
    assert [r["errors"] for r in data["runs"]] == [0, 1]  # the text file, on the second date
    for shown, record in zip(data["runs"], records):
        assert shown["videos_per_s"] == pytest.approx(record["videos_per_s"])
        assert shown["drift_tvd"] == (pytest.approx(record["drift_tvd"])
                                      if record["drift_tvd"] is not None else None)
    assert data["runs"][1]["drift_tvd"] is not None  # the second scan has one to compare with

    histogram, _ = np.histogram([row["score"] for row in ok], bins=20, range=(0, 1))
    assert {r["bin"]: r["segments"] for r in data["score_histogram"]} == {
        i: int(n) for i, n in enumerate(histogram) if n}
    assert [(s["video_uri"], s["segment"]) for s in data["uncertain"]] == \
        [e[:2] for e in least_certain(rows)[:4]]

    # Self-contained: every picture inline (5 plots, a frame grab per segment), nothing fetched.
    sources = re.findall(r"<img [^>]*src='([^']*)'", text)
    assert len(sources) == 5 + 4 and summary["frames"] == 4
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert not re.search(r"(src|href)=['\"]?(https?:|file:|//)", text)

    chromium = find_chromium()
    dom = loaded_dom(chromium, page)
    body = re.search(r"<body[^>]*>", dom)[0]
    assert 'data-images="9"' in body and 'data-broken="0"' in body, body
    screenshot(chromium, page, SCREENSHOT)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 50_000


def test_both_commands_read_and_write_s3_and_a_classify_output(ray_local, checkpoint, s3fs_client,
                                                               tmp_path: Path):
    """Archive, OUTPUT, the export and the page all on S3; frame grabs read the S3 videos. The
    OUTPUT is a classify's (as `make demo` writes): *.parquet and a classify run record."""
    bucket = "analytics"
    s3fs_client.mkdir(bucket)
    make_corpus(str(tmp_path / "made"), per_class=1, groups=1, seed=41, classes=CLASSES[:2])
    for video in sorted((tmp_path / "made").glob("*/*.mp4")):
        s3fs_client.pipe(f"{bucket}/archive/{video.name}", video.read_bytes())
    output = f"s3://{bucket}/scans"
    code, _, err = run_vidpipe(["classify", f"s3://{bucket}/archive", output, "--model",
                         str(checkpoint), "--window-seconds", str(WINDOW), "--json"])
    assert code == 0, err

    code, summary, err = run_vidpipe(["export-uncertain", output, "--out", f"{output}/tasks.json",
                               "--limit", "10", "--json"])
    assert code == 0 and summary["videos"] == 2, err
    tasks = json.loads(s3fs_client.cat_file(f"{bucket}/scans/tasks.json"))
    assert {t["data"]["video"] for t in tasks[:2]} == {
        f"s3://{bucket}/archive/{p.name}" for p in (tmp_path / "made").glob("*/*.mp4")}

    code, summary, err = run_vidpipe(["report", output, "--out", f"{output}/report.html", "--json"])
    assert code == 0 and summary["runs"] == 1 and summary["frames"] == summary["uncertain"] > 0, err
    text = s3fs_client.cat_file(f"{bucket}/scans/report.html").decode()
    data = json.loads(re.search(r"id='report-data'>(.*?)</script>", text, re.S)[1])
    record = json.loads(s3fs_client.cat_file(
        f"{bucket}/scans/_runs/{data['runs'][0]['run_id']}.json"))
    assert record["kind"] == data["runs"][0]["kind"] == "classify"
    assert data["runs"][0]["processed"] == record["videos"] == 2
    rows = pq.read_table(s3fs_client.glob(f"{bucket}/scans/*.parquet"),
                         filesystem=s3fs_client).to_pylist()
    # a classify's rows are dated by their processing (UTC)
    assert {r["scan_date"] for r in data["class_share"]} == {
        row["processed_at"].date().isoformat() for row in rows if row["status"] == "ok"}
    assert "testing-secret" not in text + err and "testing-key-id" not in text + err


def test_bad_input_is_one_line(scanned: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    runs_only = tmp_path / "runs-only"
    shutil.copytree(scanned / "_runs", runs_only / "_runs")
    for output, reason in ((empty, f"no predictions in {empty}"),
                           (runs_only, f"no predictions in {runs_only}"),
                           (tmp_path / "missing", f"no scan output at {tmp_path / 'missing'}")):
        for command in (["report", str(output), "--out", str(tmp_path / "r.html")],
                        ["export-uncertain", str(output), "--out", str(tmp_path / "u.json")]):
            code, _, err = run_vidpipe(command)
            assert code == 1 and len(err.strip().splitlines()) == 1, err
            assert err.startswith(f"vidpipe: error: {reason}"), err
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "u.json").exists()


def write_csv(path: Path, lines: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)


def test_labelled_segments_go_back_into_training(ray_local, scanned: Path, tmp_path: Path):
    """export -> a person fills `label` -> train --labels: the segments are training clips (the
    very windows the scan classified) and part of the dataset fingerprint."""
    from pipeline.clips import _decode_rows, dataset_fingerprint, with_fingerprints
    from pipeline.corpus import read_labels
    from pipeline.errors import CorpusError
    from pipeline.segments import decode_video
    from pipeline.train_job import add_labels, split_data

    manifest = tmp_path / "label-me.csv"
    code, _, err = run_vidpipe(["export-uncertain", str(scanned), "--out", str(manifest),
                         "--format", "manifest", "--limit", "3"])
    assert code == 0, err
    lines = list(csv.DictReader(manifest.open()))
    for line in lines[:2]:  # the person labels two (with the folder's class), not the third
        line["label"] = line["uri"].split("/")[-2]
    write_csv(manifest, lines)

    labels = read_labels(str(manifest), CLASSES)
    assert labels.unlabelled == 1 and len(labels.videos) == 2
    first = labels.videos[0]
    assert first.segment is not None and first.window_seconds == pytest.approx(WINDOW)
    # Its clip is the scan's window: the same frames as segment k of the scan's windowing.
    clip = _decode_rows({"uri": first.uri, "label": first.label, "span_segment": first.segment,
                         "span_window": first.window_seconds}, 8, 32, None)
    scanned_windows = decode_video({"video_uri": first.uri, "video_etag": "", "video_bytes": 0},
                                   8, 32, WINDOW)
    assert len(clip) == 1 and clip[0]["segment"] == first.segment
    assert clip[0]["clip"] == scanned_windows[first.segment]["clip"]

    typo = tmp_path / "typo.csv"
    write_csv(typo, [{**lines[0], "label": "MoveSideways"}, *lines[1:]])
    with pytest.raises(CorpusError, match="not classes of the corpus: MoveSideways"):
        read_labels(str(typo), CLASSES)

    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), classes=CLASSES, per_class=2, groups=2, seed=32)
    code, summary, err = run_vidpipe(["train", str(corpus), "--labels", str(manifest), "--out",
                               str(tmp_path / "model.pt"), "--epochs", "1", "--frames", "8",
                               "--size", "32", "--batch-size", "4",
                               "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"])
    assert code == 0, err
    assert "skipped 1 row(s)" in err and "2 labelled segment(s)" in err
    without = split_data(str(corpus), None, 0.25, 0, gate=True)
    assert summary["labelled_segments"] == 2
    assert summary["train_clips"] == len(without.train) + 2  # a clip per corpus video, and two
    with_labels = split_data(str(corpus), None, 0.25, 0, gate=True)
    add_labels(with_labels, str(manifest), lambda _: None)
    everything = with_fingerprints(with_labels.train + with_labels.val + with_labels.gate)
    assert summary["dataset_fingerprint"] == dataset_fingerprint(everything)
    assert summary["dataset_fingerprint"] != dataset_fingerprint(
        with_fingerprints(without.train + without.val + without.gate))
    _, config = load_checkpoint(tmp_path / "model.pt")
    assert config.dataset_fingerprint == summary["dataset_fingerprint"]
