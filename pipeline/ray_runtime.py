"""Connecting to Ray: a local in-process Ray by default, a cluster with `auto` or an address; and
how much of Ray's (and MLflow's) own logging reaches the terminal: errors only by default, Ray's
INFO logs with `--verbose`.

Ray 2.60 clusters started with `ray start` use token authentication; clients need
RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token), which we set when joining a cluster.
The job's workers get this process's storage settings (storage.worker_env) and test hooks
(faults.worker_env): on a cluster as runtime_env variables; a local Ray's workers inherit them
from this process's environment, through the raylet that ray.init starts (a job with a
runtime_env gets no prestarted workers: its first task and actors waited for fresh ones).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys

TRAIN_POLL_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.25"

_verbose = False
_started_here = False  # this process started its own local Ray (ensure_ray)

# Ray Train 2.60 starts a PreemptionWatcher actor (max_restarts=-1) with its workers' actor
# handles as constructor arguments; Ray passes those by reference, and its core worker then logs
# this at error level for every train. A local Ray has no watcher (ensure_ray); on a cluster the
# watcher handles node drains, so it stays and only this line is dropped.
KNOWN_RAY_NOISE = r"core_worker\.cc:\d+: Actor with class name: 'PreemptionWatcher' .* max_restarts > 0"


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
        # MLflow draws tqdm bars for artifact transfers, also when stderr is a log file.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Ray's own filter for forwarded worker lines (read when ray is imported): the one known
        # error-level line of every train (KNOWN_RAY_NOISE).
        os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", KNOWN_RAY_NOISE)
    if not sys.stderr.isatty():  # a log file or a pipe: no colour codes around "(Worker pid=N)"
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    _set_levels()


def _set_levels() -> None:
    level = logging.INFO if _verbose else logging.ERROR
    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(level)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process. `address`: None (or RAY_ADDRESS) as documented above."""
    import ray
    import ray.data

    from . import credentials, faults, storage

    if ray.is_initialized():
        return
    _set_levels()  # importing ray configured its loggers at INFO; ray.init logs through them
    # Before Ray starts (local workers inherit this environment) and records the command line.
    if os.environ.get("MLFLOW_TRACKING_URI"):
        credentials.adopt_uri_credentials(os.environ["MLFLOW_TRACKING_URI"])
    credentials.redact_ray_entrypoint()
    address = address or os.environ.get("RAY_ADDRESS") or None
    # What workers need from this process's environment; a submitted job's own runtime_env
    # already carries what it sets (and Ray refuses the same variable from both).
    given = _submitted_job_env_vars()
    env = {name: value for name, value in {**storage.worker_env(), **faults.worker_env()}.items()
           if name not in given}
    # No `logging_config` here: it drops the "(name pid=N)" prefix of forwarded worker output.
    # logging_level: ray.init sets Ray's loggers to it (INFO by default), start-up lines included.
    options = {"log_to_driver": True, "logging_level": logging.INFO if _verbose else logging.ERROR}
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **options)
    else:
        # One node, this machine's: no node drain for Ray Train's preemption watcher to see.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # dashboard_port: without a dashboard Ray still names 127.0.0.1:8265 as this Ray's State
        # API; another Ray's dashboard there answers "no such actor" for our Ray Train controller,
        # and Ray Train's placement-group cleaner then takes it for dead and exits (a 7-line warning).
        dashboard_port = _unused_port()
        with _environment({**env, **_local_worker_env(dashboard_port)}):
            # "local" explicitly: a bare ray.init() would join any cluster `ray start` left here.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     dashboard_port=dashboard_port, **options)
        global _started_here
        _started_here = True
    _set_levels()  # importing ray.data re-applies its own logging configuration
    from .progress import mark

    mark("ray up")
    # Ray Data's per-operator bars only with --verbose: vidpipe shows one bar of its own (progress.py).
    ray.data.DataContext.get_current().enable_progress_bars = _verbose


def exit_if_ray_started_here(code: int) -> None:
    """End this process with `code` when it started its own local Ray; else return.

    For a command that has finished (its output committed, its summary printed): Ray is shut
    down as usual, but then the process ends without the interpreter's teardown, which took about
    3 s on 2 cores after a classify (torch, Ray and Arrow freed module by module) for nothing a
    user sees. Not without ray.shutdown: Ray's dashboard and runtime-env agents outlive a raylet
    that dies with its driver."""
    if not _started_here:
        return
    import ray

    ray.shutdown()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader that went away (`| head`) changes nothing
            stream.flush()
    os._exit(code)


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _local_worker_env(dashboard_port: int) -> dict[str, str]:
    """What a local Ray's processes get besides this process's environment: the State API of this
    Ray (Ray Train's placement-group cleaner queries it from a worker; the same URL Ray itself
    records for `dashboard_port`), how often Ray Train's controller polls its workers, and, when
    quiet, Ray's own loggers at ERROR in every worker: RAY_LOGGER_LEVEL is the default level of
    the Python processes Ray starts (workers, and its agents, whose log files then hold errors
    only); ray.data and ray.train set theirs themselves."""
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}",
           # Ray Train's default is 2 s: a 3-epoch `vidpipe train` of 33 s spent 6.7 s between
           # its last epoch and the checkpoint in hand; at 0.25 s, 0.9 s. A user's value stays.
           TRAIN_POLL_VARIABLE: os.environ.get(TRAIN_POLL_VARIABLE, TRAIN_POLL_S)}
    if not _verbose:
        env["RAY_LOGGER_LEVEL"] = "error"
    return env


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """`variables` set in this process's environment for the block only: the processes started
    in it (a local Ray's raylet, whose workers inherit its environment) keep them; this driver,
    and whatever it starts later (a test's cluster, a subprocess), do not."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _submitted_job_env_vars() -> dict:
    """The env_vars of the runtime_env this driver was submitted with (`ray job submit`), if any."""
    import json

    injected = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not injected:
        return {}
    return (json.loads(injected).get("runtime_env") or {}).get("env_vars") or {}


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
