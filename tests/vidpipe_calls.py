"""`vidpipe` called in this test process, on the session's shared Ray, with its output captured.

(The subprocess calls, for what a user's fresh process does, stay in the tests that need them.)
"""

from __future__ import annotations

import contextlib
import io
import json

from pipeline.cli import main as vidpipe


def call_vidpipe(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `vidpipe ARGS`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = vidpipe(args)
    return code, out.getvalue(), err.getvalue()


def run_vidpipe(args: list[str]) -> tuple[int, dict | None, str]:
    """(exit code, its --json summary: the last JSON line on stdout or None, stderr)."""
    code, out, err = call_vidpipe(args)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return code, (json.loads(lines[-1]) if lines else None), err
