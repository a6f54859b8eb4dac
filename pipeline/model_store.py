"""Model REFs -> a loaded model with its lineage.

REF is a local checkpoint path, or an MLflow URI: models:/NAME@ALIAS, models:/NAME/VERSION,
runs:/RUN_ID/model. Lineage names the model in every prediction row: for the registry, the
registered name and version (and the run that produced it); for a local file, its architecture
and a hash of its bytes.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property

from .errors import CheckpointError
from .model_config import ModelConfig, read_config
from .rows import Lineage
from .tracking import CHECKPOINT_FILE, tracking_uri

_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)/.+$")


@dataclass
class LoadedModel:
    """A checkpoint's bytes, config and lineage; `model` loads its weights (torch) on first use,
    so a driver that only ships the bytes to workers never imports torch."""

    config: ModelConfig
    lineage: Lineage
    checkpoint: bytes  # the exact bytes loaded: ship these to workers, not the REF

    @cached_property
    def checkpoint_ref(self):
        """The bytes in Ray's object store (Ray must be up), put once: the model check on every
        node and the job's classify steps fetch the same object."""
        import ray

        return ray.put(self.checkpoint)

    @cached_property
    def model(self):
        """The torch model in eval mode; CheckpointError when the weights do not load."""
        from .models.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint)[0]


def load_model(ref: str, mlflow_uri: str | None = None) -> LoadedModel:
    """Fetch REF and read its config; CheckpointError with a one-line reason if it cannot be
    found or is not a vidpipe checkpoint (weights that do not load fail at `.model`)."""
    if ref.startswith(("models:/", "runs:/")):
        return _load_mlflow(ref, tracking_uri(mlflow_uri))
    try:
        with open(ref, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read model {ref}: {exc.strerror or exc}") from None
    return from_checkpoint_bytes(data)


def from_checkpoint_bytes(data: bytes, lineage: Lineage | None = None) -> LoadedModel:
    config = read_config(data)
    if lineage is None:
        lineage = Lineage(config.arch, "sha256:" + hashlib.sha256(data).hexdigest()[:16])
    return LoadedModel(config, lineage, data)


def _load_mlflow(ref: str, uri: str) -> LoadedModel:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from .preflight import check_mlflow
    from .redact import redact_uri

    check_mlflow(uri, must_exist=True, needed_for=ref)  # a lookup must not create an empty store
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        if match := _MODELS_ALIAS.match(ref):
            version = client.get_model_version_by_alias(match["name"], match["alias"])
            lineage = Lineage(match["name"], str(version.version), version.run_id)
            # Download the version the alias named just now, not the alias again: a promotion
            # in between would give rows naming version N the predictions of N+1.
            ref = f"models:/{match['name']}/{version.version}"
        elif match := _MODELS_VERSION.match(ref):
            version = client.get_model_version(match["name"], match["version"])
            lineage = Lineage(match["name"], str(version.version), version.run_id)
        elif match := _RUNS.match(ref):
            lineage = Lineage(ref, match["run_id"], match["run_id"])
        else:
            raise CheckpointError(f"not a model URI vidpipe understands: {ref}")
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=ref)
    except MlflowException as exc:
        raise CheckpointError(f"cannot load {ref} from MLflow store {redact_uri(uri)}: "
                              f"{exc.message.splitlines()[0]}") from None
    found = glob.glob(os.path.join(local, "**", CHECKPOINT_FILE), recursive=True)
    if not found:
        raise CheckpointError(f"{ref} is not a vidpipe model (no {CHECKPOINT_FILE} in its artifacts)")
    with open(found[0], "rb") as handle:
        return from_checkpoint_bytes(handle.read(), lineage)
