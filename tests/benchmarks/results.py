"""Shared by the bench_*.py scripts: each measured ratio goes into one JSON file, which
summary.py prints as the table of `make bench`.

The file is $BENCH_JSON (default: bench-results.json in the working directory); `make bench`
empties it first. A record: name, measured value, the target it is held against (None: reported
only), whether higher is better, and a one-line note on how it was measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def results_path() -> Path:
    return Path(os.environ.get("BENCH_JSON", "bench-results.json"))


def record(name: str, value: float, target: float | None = None, higher_is_better: bool = True,
           note: str = "") -> None:
    path = results_path()
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [row for row in rows if row["name"] != name]
    met = None if target is None else (value >= target if higher_is_better else value <= target)
    rows.append({"name": name, "value": round(float(value), 3), "target": target,
                 "higher_is_better": higher_is_better, "met": met, "note": note})
    path.write_text(json.dumps(rows, indent=1))
    mark = "" if met is None else (" (target met)" if met else " (target NOT met)")
    print(f"  -> {name}: {value:.3f}{'' if target is None else f' vs target {target}'}{mark}")
