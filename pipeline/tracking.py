"""MLflow: the tracking URI, models logged so that any vidpipe REF can load them, training runs,
and the registry's champion/challenger gate.

Contract for every model vidpipe logs: a pyfunc MLflow model whose artifact `checkpoint` is a
vidpipe checkpoint file named `checkpoint.pt` (see models/checkpoint.py); loaders find that file
and never unpickle the pyfunc wrapper.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .credentials import adopt_uri_credentials
from .redact import redact_uri

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_NAME_IN_RUN = "model"
PYFUNC_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlflow_pyfunc.py")


def tracking_uri(uri: str | None = None) -> str:
    """--mlflow-uri, else MLFLOW_TRACKING_URI, else a local sqlite store in the working dir; any
    user:password@ in it moves into MLflow's credential variables (credentials.py), so the URI
    returned can be stored and printed."""
    return adopt_uri_credentials(
        uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}")


def log_model(checkpoint_path: str, registered_name: str | None = None):
    """Log a checkpoint as the active run's model (and register it); returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from .models.checkpoint import load_checkpoint

    _, config = load_checkpoint(checkpoint_path)
    staging = tempfile.mkdtemp(prefix="vidpipe-model-")
    staged = os.path.join(staging, CHECKPOINT_FILE)  # the name loaders look for
    shutil.copyfile(checkpoint_path, staged)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, config.frames, config.size, config.size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.num_classes))]),
    )
    try:
        with warnings.catch_warnings():
            # MLflow's advice to log an input example does not apply: the signature is explicit,
            # and an example clip would add about a megabyte of JSON to every logged model.
            warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=PYFUNC_CODE,  # models from code: loading it unpickles nothing
                artifacts={"checkpoint": staged},
                signature=signature,
                pip_requirements=["torch", "numpy"],
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if registered_name is not None:
        info.registered_model_version = register(info.model_id, registered_name).version
    return info


def register(model_id: str, name: str):
    """A new version of registered model `name` (created if missing) for the logged model
    `model_id`, as log_model(registered_model_name=...) registers it, but through the client:
    the fluent path prints "Successfully registered model ..." and "Created version ..." to
    stderr, which vidpipe's own registration line already says."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri(),
                          registry_uri=mlflow.get_registry_uri())
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return client.create_model_version(name, source=f"models:/{model_id}", model_id=model_id)


# --- training runs and the champion/challenger gate -----------------------------------------------

CHAMPION = "champion"
CHALLENGER = "challenger"


@contextlib.contextmanager
def store_opening(uri: str):
    """MLflow imported and its store at `uri` opened in a thread while the block runs: 1.8 s of a
    small scan (import 1.2 s, a sqlite store 0.6 s), which can pass while the driver waits on
    Ray. Yields a function that waits for it and returns `uri`; call it before the first MLflow
    call of the block (two threads creating one new sqlite store would race). The block's end
    waits too, so that no half-created store is left behind when the process ends.

    Only where the command will track: opening a sqlite store creates it, which a scan refused
    for another run's lease must not do (open it once the lease is taken). A failure here is
    left to TrackedRun, where the same call fails again and is reported."""
    def open_store():
        with contextlib.suppress(Exception):  # not a thread traceback on stderr
            from mlflow import MlflowClient

            MlflowClient(tracking_uri=uri, registry_uri=uri)  # MLflow caches the store per URI

    def opened() -> str:
        thread.join()
        return uri

    thread = threading.Thread(target=open_store, daemon=True, name="mlflow-store")
    thread.start()
    try:
        yield opened
    finally:
        thread.join()


class TrackedRun:
    """One MLflow run per training (or scan). Every call is outage-tolerant: a failure is reported through
    `warn` once per call and the run carries on untracked, so MLflow never costs a trained model.
    """

    def __init__(self, uri: str, experiment: str, run_name: str, warn,
                 resume_run_id: str | None = None):
        self.uri, self.warn, self.run_id = uri, warn, None
        self.client = None
        try:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            if resume_run_id and self._run_exists(resume_run_id):
                self.run_id = resume_run_id
                self.client.update_run(resume_run_id, status="RUNNING")
            else:
                found = self.client.get_experiment_by_name(experiment)
                experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
                self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        except Exception as exc:
            self._failed("start a run", exc)

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        self._call("log params", lambda: self.client.log_batch(
            self.run_id, params=[Param(k, str(v)) for k, v in params.items()]))

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        self._call("log metrics", lambda: self.client.log_batch(
            self.run_id, metrics=metric_batch(metrics, step)))

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self._call("set a tag", lambda: self.client.set_tag(self.run_id, key, str(value)))

    def log_artifacts(self, directory: str) -> None:
        self._call("log artifacts", lambda: self.client.log_artifacts(self.run_id, directory))

    def log_model(self, checkpoint_path: str, registered_name: str | None) -> str | None:
        """Log the model (and register it); the registered version, or None."""
        import mlflow

        def log():
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_registry_uri(self.uri)
            with mlflow.start_run(run_id=self.run_id):
                info = log_model(checkpoint_path, registered_name)
            version = getattr(info, "registered_model_version", None)
            return str(version) if version is not None else None

        return self._call("log the model", log)

    def end(self, ok: bool = True) -> None:
        self._call("end the run", lambda: self.client.set_terminated(
            self.run_id, status="FINISHED" if ok else "FAILED"))

    def _run_exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:
            return False

    def _call(self, what: str, action):
        if not self.active:
            return None
        try:
            return action()
        except Exception as exc:
            self._failed(what, exc)
            return None

    def _failed(self, what: str, exc: Exception) -> None:
        self.warn(f"MLflow at {redact_uri(self.uri)}: could not {what} ({describe_failure(exc)})")


def metric_batch(metrics: dict, step: int) -> list:
    """MLflow Metric entities for one `log_batch` call, all stamped now at `step`."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in metrics.items()]


def describe_failure(exc: BaseException) -> str:
    """`Type: first line of the message`, short and with URI credentials redacted."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return redact_uri(f"{type(exc).__name__}: {first_line}")


@dataclass
class GateDecision:
    alias: str  # the alias the new version received: champion or challenger
    new_accuracy: float | None  # on the gate clips; None: there were none
    champion_accuracy: float | None  # on the same clips; None: no comparable champion
    champion_version: str | None
    reason: str
    gate_clips: int = 0  # validation clips that neither epoch selection nor either model trained on
    baseline_accuracy: float | None = None  # the better of chance and the most frequent class


def baseline_accuracy(labels: np.ndarray, num_classes: int) -> float:
    """What a model that learned nothing scores on clips with true `labels`: the better of
    guessing (1 / classes) and always answering their most frequent class."""
    majority = np.bincount(labels, minlength=num_classes).max() / max(1, len(labels))
    return float(max(1.0 / num_classes, majority))


def baseline_margin(baseline: float, clips: int) -> float:
    """How far above `baseline` a model must score on `clips` clips to count as better: one
    binomial standard error of a baseline-level model's accuracy there. A model that knows
    nothing beats the baseline by this much about one time in six by luck (one-sided normal),
    not one time in two as a bare `>` would let it; 0.125 on 12 clips of 4 balanced classes."""
    return float(np.sqrt(baseline * (1.0 - baseline) / max(1, clips)))


def decide_gate(gate_clips: int, new_accuracy: float | None, baseline: float | None,
                champion: str | None, champion_accuracy: float | None,
                why: str = "") -> GateDecision:
    """The alias a new version earns (pure; apply_gate sets it). The gate compares only on
    `gate_clips`: validation clips that neither epoch selection nor the new model's nor the
    champion's training used; `why` says why there are none, or why the champion could not be
    compared. `champion`: the incumbent's version, None when the model has none.

    `champion` only for a model strictly better than knowing nothing (see baseline_margin) and,
    where there is a champion, strictly better than it on the same clips (a tie keeps the
    incumbent); a champion that cannot be compared is never replaced blindly."""
    def decided(alias: str, reason: str) -> GateDecision:
        return GateDecision(alias, new_accuracy, champion_accuracy, champion, reason, gate_clips,
                            baseline)

    if gate_clips == 0 or new_accuracy is None or baseline is None:
        because = f" ({why})" if why else ""
        return decided(CHALLENGER, f"not promoted: no gate clips to compare on{because}")
    bar = baseline + baseline_margin(baseline, gate_clips)
    on = f"on {gate_clips} gate clips"
    if new_accuracy <= bar:
        return decided(CHALLENGER, f"no better than chance or the most frequent class {on} "
                                   f"({new_accuracy:.4f} <= {baseline:.4f} + one standard error "
                                   f"= {bar:.4f})")
    if champion is None:
        return decided(CHAMPION, f"no champion yet; beats chance and the most frequent class {on} "
                                 f"({new_accuracy:.4f} > {bar:.4f})")
    if champion_accuracy is None:
        return decided(CHALLENGER, f"not promoted: champion v{champion} not comparable ({why})")
    if new_accuracy > champion_accuracy:
        return decided(CHAMPION, f"beats champion v{champion} {on} "
                                 f"({new_accuracy:.4f} > {champion_accuracy:.4f})")
    return decided(CHALLENGER, f"does not beat champion v{champion} {on} "
                               f"({new_accuracy:.4f} <= {champion_accuracy:.4f})")


def champion_version(uri: str, name: str) -> str | None:
    """The version holding the champion alias of registered model `name`; None only when the
    registry says there is no such model. Any other failure (5xx, 403, refused connection)
    raises: the gate must never crown a model it could not compare with the incumbent."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        model = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(CHAMPION)
    return str(version) if version is not None else None


def apply_gate(uri: str, name: str, version: str, decision: GateDecision) -> None:
    """Give `version` of `name` the alias `decision` chose (champion or challenger)."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        name, decision.alias, version)
