"""Keeping secrets out of everything vidpipe stores or prints.

MLflow credentials live in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or
MLFLOW_TRACKING_TOKEN), which MLflow reads itself. A tracking URI given as
`http://user:password@host` is split once, on entry (`adopt_uri_credentials`): the credentials move
into those variables and only the bare URI travels on, into run records, Ray Train's config (which
Ray exports to its state API and dashboard), MLflow's own "View run at" lines and our messages.
Ray Train workers get the credentials through the object store (`for_workers`/`use_on_worker`),
never through a config or a runtime_env, both of which Ray records.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

from .redact import redact_uri

MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                      "MLFLOW_TRACKING_TOKEN")

def adopt_uri_credentials(uri: str) -> str:
    """`uri` without its user:password@, which go into the MLflow credential variables of this
    process (the URI's own credentials win over variables already set). Idempotent."""
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        os.environ["MLFLOW_TRACKING_URI"] = bare  # inherited by local Ray workers and children
    return bare


def for_workers():
    """An object-store reference to this process's MLflow credentials (None without any), to
    hand to Ray workers: what a reference holds is not part of any config Ray exports."""
    values = {name: os.environ[name] for name in MLFLOW_CREDENTIALS if os.environ.get(name)}
    if not values:
        return None
    import ray

    return ray.put(values)


def use_on_worker(reference) -> None:
    """On a Ray worker: set the MLflow credentials `for_workers` handed over."""
    if reference is None:
        return
    import ray

    os.environ.update(ray.get(reference))


def redact_ray_entrypoint() -> None:
    """Ray records the driver's command line as the job's entrypoint (job table, dashboard); a
    `--mlflow-uri http://user:password@...` there would be stored. Redact what it records."""
    try:
        import ray._private.utils as ray_utils
    except ImportError:
        return
    original = getattr(ray_utils, "get_entrypoint_name", None)
    if original is None or getattr(original, "vidpipe_redacted", False):
        return

    def redacted() -> str:
        return redact_uri(original())

    redacted.vidpipe_redacted = True
    ray_utils.get_entrypoint_name = redacted
