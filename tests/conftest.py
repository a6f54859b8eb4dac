"""Shared fixtures: generated videos and corpora, and one Ray per test process (session).

Fixtures that start services live in tests/fixtures/ and are registered in `pytest_plugins`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from videos import write_bad_inputs  # noqa: E402

from pipeline.synthetic import make_corpus  # noqa: E402

pytest_plugins = ["fixtures.s3", "fixtures.s3_proxy", "fixtures.mlflow_server", "fixtures.ray_cluster"]

# The AWS credential chain of the test session: dummy keys for the loopback S3 server, set before
# any Ray worker starts so that workers inherit them as they would a node's credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="session")
def motion_corpus(tmp_path_factory) -> Path:
    """A small four-class motion corpus (MoveLeft/Right/Up/Down), 4 groups per class."""
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(str(root), per_class=12, groups=4, seed=11)
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray (2 CPUs) shared by every test of this process that needs Ray; start-up
    costs 5-15 s."""
    import ray

    from pipeline.ray_runtime import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def mlflow_uris_stay_in_their_module():
    """`mlflow.set_tracking_uri` (which an in-process `vidpipe train --mlflow-uri` calls) also
    sets MLFLOW_TRACKING_URI in os.environ, so that every later `vidpipe` subprocess of the
    session would track into that module's store. Each module gets the URIs it started with."""
    before = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
