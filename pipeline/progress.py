"""Progress of a distributed job as a user sees it: a tqdm bar on a terminal, one line every
`period_s` seconds otherwise (logs, CI, cron mail; VIDPIPE_PROGRESS_SECONDS sets the period),
and nothing else.

Workers report counts to a small actor (`report(handle, key, n)`, fire and forget); a thread on
the driver reads it. Keys: `listed` (videos the listing tasks have found so far) and `done`
(videos whose first segment has been classified). A job that knows its total before it starts (a
scan, after planning) passes `total` instead of counting `listed`.

The same actor records where the job's tasks and actors ran (`report_node`; `Progress.nodes()`):
a diagnostic beside the data (job summaries list the nodes), never a column of it. One actor, not
two: each is a worker process of its own, and on a small job starting one costs about a second.
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


class _JobLog:
    """The actor: counts per key, and the nodes that reported."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self._nodes: set[str] = set()

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def get(self) -> dict[str, int]:
        return dict(self.counts)

    def add_node(self, node: str) -> None:
        self._nodes.add(node)

    def nodes(self) -> list[str]:
        return sorted(self._nodes)


def report(handle, key: str, n: int) -> None:
    """Add `n` to `key` of the job's counter (`handle`: Progress.handle; None: not tracked)."""
    if handle is not None and n:
        handle.add.remote(key, n)


_reported: set[str] = set()  # the job logs this worker process has told its node


def report_node(handle) -> None:
    """Tell the job's log (`handle`: Progress.handle; None: not tracked) which node this worker
    process is on, once per process and job.

    Waits for the log to have it: a call only sent could still be in flight when this node is
    lost a moment later, and the job summary would then miss a node that had work."""
    import ray

    if handle is None:
        return
    key = handle._actor_id.hex()
    if key not in _reported:
        ray.get(handle.add_node.remote(ray.get_runtime_context().get_node_id()))
        _reported.add(key)


class Progress:
    """The job's log actor plus the driver thread that shows its counts. Use as a context
    manager; read `nodes()` inside it."""

    def __init__(self, say: Callable[[str], None], what: str = "videos classified",
                 period_s: float | None = None, stream=None, total: int | None = None):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node: losing a worker node must not lose the log.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.handle = ray.remote(_JobLog).options(num_cpus=0, scheduling_strategy=here).remote()
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

    def nodes(self) -> list[str]:
        """The nodes the job's tasks and actors reported (`report_node`), sorted."""
        import ray

        return ray.get(self.handle.nodes.remote())

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
