"""`vidpipe similar`: nearest segments by embedding, in DuckDB, on a local folder and on S3.

The model is trained briefly on the four-class motion corpus (small clips, a few epochs), so
that its embeddings mean something; a segment's nearest segments should then be mostly of its
own motion class. Chance is 11 of the 47 other videos (0.23) per neighbour.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from vidpipe_calls import call_vidpipe

from pipeline.frames import sample_clip
from pipeline.inference import classify_sequential
from pipeline.models.checkpoint import ModelConfig, save_checkpoint
from pipeline.similar import NEAREST_SQL, similar
from pipeline.training import LabelledClips, TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
K = 5
PRECISION_AT_K_BOUND = 0.75  # measured 0.98 (4 epochs, 12 frames of 32x32)


@pytest.fixture(scope="module")
def trained(motion_corpus, tmp_path_factory) -> Path:
    """The default architecture, trained in-process for 4 epochs on the corpus (about 35 s)."""
    classes = tuple(sorted(path.name for path in motion_corpus.iterdir()))
    videos = sorted(motion_corpus.glob("*/*.mp4"))
    config = ModelConfig("motion3d_gru", classes, frames=12, size=32)
    clips = np.stack([sample_clip(path, num_frames=12, size=(32, 32)) for path in videos])
    labels = np.array([classes.index(path.parent.name) for path in videos])
    torch.manual_seed(0)
    model, _ = fit(config, LabelledClips(clips, labels), None,
                   TrainSettings(epochs=4, min_steps=0, seed=0))
    path = tmp_path_factory.mktemp("similar-model") / "model.pt"
    save_checkpoint(model, config, path)
    return path


def test_nearest_segments_are_of_the_same_motion_locally_and_on_s3(
        trained, motion_corpus, tmp_path, s3_endpoint, s3fs_client):
    local = tmp_path / "out"
    classify_sequential(str(motion_corpus), str(local / "p.parquet"), str(trained))
    uris = sorted(f"file://{path}" for path in motion_corpus.glob("*/*.mp4"))

    precisions = []
    for uri in uris:
        found = similar(str(local), uri, k=K)
        neighbours = found["neighbours"]
        assert len(neighbours) == K and found["model_name"] == "motion3d_gru128"
        assert uri not in {n["video_uri"] for n in neighbours}  # never the query itself
        similarities = [n["similarity"] for n in neighbours]
        assert similarities == sorted(similarities, reverse=True) and similarities[0] <= 1 + 1e-6
        own = Path(uri).parent.name
        precisions.append(np.mean([Path(n["video_uri"]).parent.name == own for n in neighbours]))
    precision = float(np.mean(precisions))
    print(f"precision@{K} = {precision:.3f} over {len(uris)} videos")
    assert precision >= PRECISION_AT_K_BOUND

    # S3, laid out as a scan's OUTPUT, with an older partition written without embeddings: it
    # still reads (union_by_name) and its rows are not searched.
    query = uris[0]
    s3fs_client.mkdir("similar")
    prefix = "similar/out/predictions"
    s3fs_client.put(str(local / "p.parquet"), f"{prefix}/scan_date=2026-12-02/part-0.parquet")
    classify_sequential(str(motion_corpus / "MoveUp"), str(tmp_path / "old.parquet"),
                        str(trained), embeddings=False)
    s3fs_client.put(str(tmp_path / "old.parquet"), f"{prefix}/scan_date=2026-12-01/part-0.parquet")
    code, out, err = call_vidpipe(["similar", "s3://similar/out", query, "--k", str(K), "--json",
                           "--s3-endpoint-url", s3_endpoint])
    assert code == 0, err
    on_s3 = json.loads(out.strip().splitlines()[-1])
    assert on_s3["neighbours"] == similar(str(local), query, k=K)["neighbours"]
    assert "testing-secret" not in out + err

    # The text form: one line per neighbour, most similar first.
    code, out, _ = call_vidpipe(["similar", str(local), str(motion_corpus / Path(query).parent.name
                                                    / Path(query).name), "--k", "3"])
    assert code == 0 and len(out.strip().splitlines()) == 1 + 3

    # Bad input: one line each, exit 1.
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "old.parquet").rename(tmp_path / "plain" / "old.parquet")
    cases = {
        ("similar", str(tmp_path / "empty"), query): "no predictions in",
        ("similar", str(local), "file:///elsewhere/v.mp4"): "is not in the predictions",
        ("similar", str(local), query, "--segment", "3"): "has no segment 3 (it has segments 0)",
        ("similar", str(tmp_path / "plain"), query): "have no embeddings",
    }
    for args, message in cases.items():
        code, _, err = call_vidpipe(list(args))
        assert code == 1 and err.count("\n") == 1 and message in err, err


def test_the_readme_shows_the_query_the_command_runs():
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert " ".join(NEAREST_SQL.format(width=128).split()) in readme
