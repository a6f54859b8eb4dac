"""Progress of a distributed job as a user sees it: a tqdm bar on a terminal, one line every
`period_s` seconds otherwise (logs, CI, cron mail; VIDPIPE_PROGRESS_SECONDS sets the period),
and nothing else.

Workers report counts to a small counter actor (`report(handle, key, n)`, fire and forget); a
thread on the driver reads it. Keys: `listed` (videos the listing tasks have found so far) and
`done` (videos whose first segment has been classified). A job that knows its total before it
starts (a scan, after planning) passes `total` instead of counting `listed`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

PERIOD_S = 30.0  # one line per half minute when stderr is not a terminal
PERIOD_VARIABLE = "VIDPIPE_PROGRESS_SECONDS"
TIMINGS_VARIABLE = "VIDPIPE_TIMINGS"


def mark(stage: str) -> None:
    """With VIDPIPE_TIMINGS set, one stderr line `vidpipe timing: STAGE UNIX_SECONDS` (workers'
    lines reach the driver's stderr too): where a command's fixed cost goes, for
    tests/benchmarks/bench_fixed_cost.py. Wall-clock seconds, so marks from several processes
    compare."""
    if os.environ.get(TIMINGS_VARIABLE):
        print(f"vidpipe timing: {stage} {time.time():.3f}", file=sys.stderr, flush=True)


class _Counter:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def report(handle, key: str, n: int) -> None:
    """Add `n` to `key` of the job's counter (`handle`: Progress.handle; None: not tracked)."""
    if handle is not None and n:
        handle.add.remote(key, n)


class Progress:
    """A counter actor plus the driver thread that shows it. Use as a context manager."""

    def __init__(self, say: Callable[[str], None], what: str = "videos classified",
                 period_s: float | None = None, stream=None, total: int | None = None):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.handle = ray.remote(_Counter).options(num_cpus=0, scheduling_strategy=here).remote()
        self.say, self.what, self.total = say, what, total
        self.period_s = period_s or period_from_env()
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._bar = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=" videos", desc=what, file=self.stream,
                             dynamic_ncols=True, leave=False)
        self._thread = threading.Thread(target=self._run, name="vidpipe-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import ray

        self._stop.set()
        self._thread.join(timeout=10)
        if self._bar is not None:
            self._bar.close()
        ray.kill(self.handle)

    def counts(self) -> dict[str, int]:
        import ray

        return ray.get(self.handle.get.remote(), timeout=30)

    def _run(self) -> None:
        interval = 0.5 if self._bar is not None else self.period_s
        while not self._stop.wait(interval):
            try:
                counts = self.counts()
            except Exception:  # never let the display break the job
                continue
            done, listed = counts.get("done", 0), counts.get("listed", 0)
            if self._bar is not None:
                self._bar.total = self.total or listed or None
                self._bar.n = done
                self._bar.refresh()
            else:
                self.say(self.line(done, listed, time.monotonic() - self._started))

    def line(self, done: int, listed: int, seconds: float) -> str:
        of = f" of {self.total}" if self.total else f" of {listed} listed" if listed else ""
        rate = done / seconds if seconds > 0 else 0.0
        return f"{done}{of} {self.what} ({rate:.2f}/s, {seconds:.0f}s)"


def period_from_env() -> float:
    """VIDPIPE_PROGRESS_SECONDS when it is a positive number, else PERIOD_S (a typo in a cron
    line's environment must not cost the job)."""
    try:
        period = float(os.environ.get(PERIOD_VARIABLE) or PERIOD_S)
    except ValueError:
        return PERIOD_S
    return period if period > 0 else PERIOD_S


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
