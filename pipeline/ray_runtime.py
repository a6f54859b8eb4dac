"""Connecting to Ray, and how much of Ray's (and MLflow's) own logging reaches the terminal.

Ray: a local in-process Ray by default, a cluster with `auto` or an address. Quiet by default
(errors only); `--verbose` shows Ray's INFO logs.

Ray 2.60 clusters started with `ray start` use token authentication; clients need
RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token), which we set when joining a cluster.
"""

from __future__ import annotations

import logging
import os

_verbose = False


def set_verbose(verbose: bool) -> None:
    """Ray's INFO logs (start-up, per-dataset execution plans, Ray Train internals) only when asked:
    vidpipe prints its own progress lines. Call before `ensure_ray`."""
    global _verbose
    _verbose = verbose
    if not verbose:
        # Inherited by the local Ray's workers; Ray Data configures its loggers from this variable
        # in every process, and its deprecation notices are for Ray's own calls, not ours.
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    _set_levels()


def _set_levels() -> None:
    level = logging.INFO if _verbose else logging.ERROR
    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(level)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process. `address`: None (or RAY_ADDRESS) as documented above."""
    import ray
    import ray.data

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Workers' Python logs (forwarded to this terminal) at the same level as the driver's.
    options = {"log_to_driver": True,
               "logging_config": ray.LoggingConfig(log_level="INFO" if _verbose else "ERROR")}
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=address, **options)
    else:
        # "local" explicitly: a bare ray.init() would join any cluster `ray start` left on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
    _set_levels()  # importing ray.data re-applies its own logging configuration


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
