"""`vidpipe models` and `vidpipe promote`: the MLflow model registry as a user manages it.

`list_models` gives every registered model with its versions, their aliases and the validation
accuracy of the run that trained them (`final_val_accuracy`, the clip accuracy on the validation
clips that `vidpipe train` logs). `promote` moves the `champion` alias explicitly, bypassing the
automatic gate, and records who did it and why as tags on the registered model and the version.
Callers check first that the store exists (preflight.check_mlflow): nothing here creates one.
"""

from __future__ import annotations

import getpass
import socket
from datetime import datetime, timezone

from .errors import InvalidInput
from .redact import redact_uri
from .tracking import CHAMPION

VAL_ACCURACY_METRIC = "final_val_accuracy"


class RegistryError(InvalidInput):
    """A registry lookup that found nothing; the message names the store searched."""


def list_models(uri: str, name: str | None = None) -> list[dict]:
    """Registered models (or only `name`), newest version first, as plain dicts."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        if name:
            models = [client.get_registered_model(name)]
        else:
            models = list(client.search_registered_models(max_results=1000))
    except MlflowException as exc:
        raise RegistryError(f"{_first_line(exc)} (MLflow store {redact_uri(uri)})") from None
    result = []
    for model in sorted(models, key=lambda m: m.name):
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name = '{model.name}'")
        rows = []
        for version in sorted(versions, key=lambda v: -int(v.version)):
            rows.append({"version": str(version.version),
                         "aliases": sorted(aliases.get(str(version.version), [])),
                         "val_accuracy": _val_accuracy(client, version.run_id),
                         "run_id": version.run_id,
                         "created": _iso(version.creation_timestamp)})
        result.append({"name": model.name, "versions": rows})
    return result


def format_models(models: list[dict], uri: str) -> str:
    if not models:
        return f"no registered models in MLflow store {redact_uri(uri)}"
    lines = [f"{'MODEL':<24} {'VERSION':>7}  {'ALIASES':<22} {'VAL ACC':>7}  CREATED (UTC)"]
    for model in models:
        for row in model["versions"]:
            accuracy = f"{row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else "-"
            lines.append(f"{model['name']:<24} {row['version']:>7}  "
                         f"{','.join(row['aliases']) or '-':<22} {accuracy:>7}  {row['created']}")
    return "\n".join(lines)


def promote(uri: str, name: str, version: str, reason: str = "", user: str | None = None) -> dict:
    """Move `champion` of `name` to `version`; tags record who, when, why and the previous one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        model = client.get_registered_model(name)
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"cannot promote {name} v{version}: {_first_line(exc)} "
                            f"(MLflow store {redact_uri(uri)})") from None
    previous = (model.aliases or {}).get(CHAMPION)
    who = user or _who()
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    client.set_registered_model_alias(name, CHAMPION, version)
    tags = {"vidpipe.promoted_by": who, "vidpipe.promoted_at": when,
            "vidpipe.promote_reason": reason or "(none given)",
            "vidpipe.promoted_from": str(previous) if previous is not None else "none"}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_tag(name, "vidpipe.last_promotion",
                                    f"v{version} by {who} at {when}: {reason or '(none given)'}")
    return {"name": name, "version": version,
            "previous": str(previous) if previous is not None else None, **tags}


def _val_accuracy(client, run_id: str | None) -> float | None:
    if not run_id:
        return None
    try:
        value = client.get_run(run_id).data.metrics.get(VAL_ACCURACY_METRIC)
    except Exception:  # a deleted run: the version stays listable
        return None
    return float(value) if value is not None else None


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _iso(millis: int | None) -> str:
    if not millis:
        return "-"
    return datetime.fromtimestamp(millis / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _first_line(exc) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join((text.strip().splitlines() or [""])[0].split())
