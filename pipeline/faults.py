"""A hook for crash tests: stop a run at a named moment so that a test can SIGKILL it right there.

VIDPIPE_TEST_PAUSE_AT=<moment> makes the process that reaches `pause("<moment>")` say so on stderr
("vidpipe test hook: paused at <moment>") and sleep VIDPIPE_TEST_PAUSE_S seconds (default 60),
once per process. Moments: decoding (a decode task), writing (a staged-file writer task),
before_commit, before_intent, after_intent and mid_publish (the driver). Unset, as everywhere outside the
tests, nothing happens. `ray_runtime.ensure_ray` hands the variables to the job's workers.
"""

from __future__ import annotations

import os
import sys
import time

VARIABLES = ("VIDPIPE_TEST_PAUSE_AT", "VIDPIPE_TEST_PAUSE_S")
_paused: set[str] = set()


def pause(moment: str) -> None:
    if os.environ.get("VIDPIPE_TEST_PAUSE_AT") != moment or moment in _paused:
        return
    _paused.add(moment)
    print(f"vidpipe test hook: paused at {moment}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("VIDPIPE_TEST_PAUSE_S", "60")))


def worker_env() -> dict[str, str]:
    """The hook's variables set in this process, for Ray workers (empty outside tests)."""
    return {name: os.environ[name] for name in VARIABLES if name in os.environ}
