"""`vidpipe models` and `vidpipe promote` on a real MLflow store (sqlite), with models logged the
way `vidpipe train --register` logs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from checkpoints import untrained_checkpoint

from pipeline.cli import main as vidpipe


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Two registered versions of `vidpipe` (val accuracy 0.5 and 0.75); v1 is champion."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline.tracking import log_model

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    checkpoint = untrained_checkpoint(root / "model.pt", ("MoveLeft", "MoveRight"), "cnn3d_none",
                                      frames=8, size=32)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("vidpipe-train")
    for accuracy in (0.5, 0.75):
        with mlflow.start_run():
            mlflow.log_metric("final_val_accuracy", accuracy)
            log_model(str(checkpoint), "vidpipe")
    MlflowClient(uri, uri).set_registered_model_alias("vidpipe", "champion", "1")
    return uri


def test_models_lists_versions_aliases_and_accuracy(store, capsys):
    assert vidpipe(["models", "--mlflow-uri", store]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["MODEL", "VERSION", "ALIASES", "VAL"]
    rows = [line.split()[:4] for line in table[1:]]
    assert rows == [["vidpipe", "2", "-", "0.750"], ["vidpipe", "1", "champion", "0.500"]]

    assert vidpipe(["models", "vidpipe", "--mlflow-uri", store, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [v["aliases"] for v in summary["models"][0]["versions"]] == [[], ["champion"]]


def test_promote_moves_champion_and_records_who_and_why(store, capsys):
    from mlflow import MlflowClient

    assert vidpipe(["promote", "vidpipe", "2", "--reason", "better on night clips",
                    "--mlflow-uri", store]) == 0
    assert "champion is now v2 (was v1)" in capsys.readouterr().err
    client = MlflowClient(store, store)
    assert str(client.get_model_version_by_alias("vidpipe", "champion").version) == "2"
    tags = client.get_model_version("vidpipe", "2").tags
    assert tags["vidpipe.promote_reason"] == "better on night clips"
    assert tags["vidpipe.promoted_from"] == "1" and "@" in tags["vidpipe.promoted_by"]


def test_promote_an_unknown_version_names_the_store(store, capsys):
    assert vidpipe(["promote", "vidpipe", "9", "--mlflow-uri", store]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("vidpipe: error: cannot promote vidpipe v9")
    assert store in error


def test_models_without_a_store_creates_none(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert vidpipe(["models", "--mlflow-uri", uri]) == 1
    assert f"no MLflow store at {uri}" in capsys.readouterr().err
    assert not Path(tmp_path / "mlflow.db").exists()


def test_unknown_alias_names_the_store(store, tmp_path, motion_corpus, capsys):
    code = vidpipe(["classify", str(motion_corpus / "MoveLeft"), str(tmp_path / "out"),
                    "--model", "models:/vidpipe@nightly", "--mlflow-uri", store])
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert "models:/vidpipe@nightly" in error and f"MLflow store {store}" in error


def test_registering_prints_nothing_and_links_each_version_to_its_run(tmp_path, capsys):
    # MLflow's fluent registration printed "Successfully registered model 'NAME'." and "Created
    # version 'N' of model 'NAME'." to stderr beside vidpipe's own line on the registration.
    import mlflow
    from mlflow import MlflowClient

    from pipeline.tracking import log_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    untrained_checkpoint(tmp_path / "model.pt", ("MoveLeft", "MoveRight"), "cnn3d_none", frames=8,
                         size=32)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("vidpipe-train")  # not the experiment id another store's test left active
    capsys.readouterr()
    runs, versions = [], []
    for _ in range(2):  # the first creates the registered model, the second adds a version
        with mlflow.start_run() as run:
            versions.append(log_model(str(tmp_path / "model.pt"), "quiet").registered_model_version)
        runs.append(run.info.run_id)
    err = capsys.readouterr().err
    assert "registered model" not in err and "Created version" not in err, err
    assert [str(v) for v in versions] == ["1", "2"]
    client = MlflowClient(uri, uri)
    assert [client.get_model_version("quiet", v).run_id for v in ("1", "2")] == runs
