"""Small pure pieces of the first-hour work: URI redaction, the training-overlap check that
`evaluate` warns with, and the progress line."""

from __future__ import annotations

from pipeline.clips import video_digests, with_fingerprints
from pipeline.corpus import read_corpus
from pipeline.evaluation import training_overlap
from pipeline.models.checkpoint import ModelConfig, checkpoint_bytes, load_checkpoint
from pipeline.progress import PERIOD_S, PERIOD_VARIABLE, Progress, period_from_env
from pipeline.redact import redact_uri


def test_redact_uri_drops_userinfo_and_secret_query_values():
    assert redact_uri("http://alice:pw@mlflow:5000/x") == "http://***@mlflow:5000/x"
    assert redact_uri("https://h/p?X-Amz-Signature=abc&part=1&token=t0k") == \
        "https://h/p?X-Amz-Signature=***&part=1&token=***"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_checkpoint_knows_its_training_videos_and_evaluate_counts_the_overlap(motion_corpus):
    videos = list(with_fingerprints(read_corpus(str(motion_corpus)).videos))
    trained_on, held_out = videos[:10], videos[10:]
    config = ModelConfig("cnn3d_none", ("MoveDown", "MoveLeft", "MoveRight", "MoveUp"),
                         frames=8, size=32, training_videos=video_digests(trained_on))
    _, loaded = load_checkpoint(checkpoint_bytes(config.build(), config))
    assert loaded.training_videos == config.training_videos
    assert training_overlap(loaded, held_out) == 0
    assert training_overlap(loaded, videos) == 10
    older = ModelConfig("cnn3d_none", ("MoveDown",), frames=8, size=32)  # records none: no warning
    assert training_overlap(older, videos) == 0


def test_progress_line_without_and_with_a_listing_count():
    line = Progress.line.__get__(type("P", (), {"what": "videos classified", "total": None})())
    assert line(0, 0, 0) == "0 videos classified (0.00/s, 0s)"
    assert line(30, 120, 60) == "30 of 120 listed videos classified (0.50/s, 60s)"
    # a scan knows what it will classify once it has planned
    planned = Progress.line.__get__(type("P", (), {"what": "videos classified", "total": 40})())
    assert planned(30, 0, 60) == "30 of 40 videos classified (0.50/s, 60s)"


def test_progress_period_from_the_environment(monkeypatch):
    for value, period in (("5", 5.0), ("0.5", 0.5), ("", PERIOD_S), ("soon", PERIOD_S),
                          ("0", PERIOD_S), ("-3", PERIOD_S)):
        monkeypatch.setenv(PERIOD_VARIABLE, value)
        assert period_from_env() == period, value


def test_the_demo_starts_clean_and_removes_only_its_own_outputs(tmp_path, capsys):
    from pipeline import demo

    (tmp_path / "corpus" / "MoveLeft").mkdir(parents=True)
    (tmp_path / "model.pt").write_bytes(b"old weights")
    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "predictions.parquet").mkdir()
    (tmp_path / "notes.txt").write_text("mine")  # not the demo's: kept
    demo.clean(str(tmp_path))
    said = capsys.readouterr().out
    assert "Removing the previous demo's corpus, model.pt, mlflow.db, predictions.parquet" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    demo.clean(str(tmp_path))  # nothing of the demo's left: silent
    assert capsys.readouterr().out == ""
