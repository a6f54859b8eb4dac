"""Print the ratios the bench_*.py scripts recorded (results.py) as a table, then as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import results_path  # noqa: E402


def main() -> None:
    rows = json.loads(results_path().read_text()) if results_path().exists() else []
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| measure | value | target | met |")
    print("|---|---:|---:|---|")
    for row in rows:
        target = "" if row["target"] is None else \
            f"{'>=' if row['higher_is_better'] else '<='} {row['target']}"
        met = "" if row["met"] is None else ("yes" if row["met"] else "no")
        print(f"| {row['name']} | {row['value']:.3f} | {target} | {met} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
