"""The fixed cost of a small job: `vidpipe --help`, classifying one 10-second video, and the floor
Ray's own start-up sets, each a fresh process, interleaved, median of several runs (issue 20).

    .venv/bin/python tests/benchmarks/bench_fixed_cost.py [--repeats 5] [--compare DIR]

`--compare DIR`: also time help and classify with DIR's `pipeline/` (e.g. an export of the
commit before a change), interleaved with the others; reported, not recorded.

- help: `python -m pipeline.cli --help`, wall;
- floor: a fresh process that imports Ray, starts a local Ray (`ray.init(address="local")`,
  no dashboard, as vidpipe starts it), runs one trivial task and exits, wall;
- classify: `python -m pipeline.cli classify VIDEO OUT --model M` on one 10 s video (a fresh
  motion3d_gru, 2 s windows: 5 clips), wall; with VIDPIPE_TIMINGS set the command prints when
  each stage ended (progress.mark), which gives where its time goes.
Targets: help <= 0.5 s; classify <= 5 s, or within 1.5x of the floor where the floor makes 5 s
impossible.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from pipeline.models.checkpoint import ModelConfig, save_checkpoint  # noqa: E402
from pipeline.synthetic import encode_h264  # noqa: E402
from results import record  # noqa: E402

FLOOR = ("import ray; ray.init(address='local', include_dashboard=False, logging_level='ERROR'); "
         "ray.get(ray.remote(lambda: 1).remote())")
MARK = re.compile(r"vidpipe timing: (.+) (\d+\.\d+)$")
# The stages a one-video classify goes through, in order (progress.mark), then the exit.
STAGES = ("parsed", "imported", "ray up", "nodes checked", "task started", "model loaded",
          "rows staged", "committed", "exit")


def make_inputs(root: Path) -> tuple[Path, Path]:
    """A 10 s 25 fps 128x96 H.264 video of a moving gradient, and a fresh model's checkpoint."""
    t = np.arange(250)[:, None, None]
    y, x = np.mgrid[0:96, 0:128]
    luma = ((x[None] + 2 * t + y[None]) % 256).astype(np.uint8)
    video = root / "videos" / "one.mp4"
    video.parent.mkdir()
    video.write_bytes(encode_h264(np.stack([luma, luma[:, ::-1], 255 - luma], axis=-1), fps=25))
    config = ModelConfig("motion3d_gru", ("MoveDown", "MoveLeft", "MoveRight", "MoveUp"),
                         clip_seconds=2.0)
    model = root / "model.pt"
    save_checkpoint(config.build(), config, model)
    return video, model


def timed(command: list[str], tree: Path = ROOT) -> tuple[float, str]:
    """Wall seconds of `command` in a fresh process (it must succeed) with `tree`'s pipeline/, and
    its stderr."""
    env = {**os.environ, "PYTHONPATH": str(tree), "VIDPIPE_TIMINGS": "1"}
    started = time.time()
    # cwd = tree: `python -m` puts the working directory first on sys.path, before PYTHONPATH.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree, timeout=600)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return wall, done.stderr


def stage_offsets(stderr: str, started: float, wall: float) -> dict[str, float]:
    """Seconds from the process start to each stage's mark (the first, where several print)."""
    offsets: dict[str, float] = {}
    for line in stderr.splitlines():
        if match := MARK.search(line.strip()):
            offsets.setdefault(match[1], float(match[2]) - started)
    offsets["exit"] = wall
    return offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    python = sys.executable
    walls: dict[str, list[float]] = {"help": [], "floor": [], "classify": []}
    if args.compare:
        walls.update({"help (compared)": [], "classify (compared)": []})
    stages: list[dict[str, float]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-fixed-") as tmp:
        video, model = make_inputs(Path(tmp))
        for repeat in range(args.repeats):  # interleaved: the machine's load hits all alike
            loads.append(os.getloadavg()[0])
            walls["help"].append(timed([python, "-m", "pipeline.cli", "--help"])[0])
            walls["floor"].append(timed([python, "-c", FLOOR])[0])
            started = time.time()
            wall, stderr = timed([python, "-m", "pipeline.cli", "classify", str(video),
                                  str(Path(tmp) / f"out-{repeat}"), "--model", str(model)])
            walls["classify"].append(wall)
            stages.append(stage_offsets(stderr, started, wall))
            if args.compare:
                walls["help (compared)"].append(
                    timed([python, "-m", "pipeline.cli", "--help"], args.compare)[0])
                walls["classify (compared)"].append(timed(
                    [python, "-m", "pipeline.cli", "classify", str(video),
                     str(Path(tmp) / f"out-compared-{repeat}"), "--model", str(model)],
                    args.compare)[0])
            print(f"run {repeat + 1}: " + ", ".join(f"{name} {values[-1]:.2f}s"
                                                  for name, values in walls.items()), flush=True)

    median = {name: statistics.median(values) for name, values in walls.items()}
    print(f"\nmedians of {args.repeats} runs; load average {statistics.median(loads):.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'':<36}{'wall (s)':>10}")
    print(f"{'vidpipe --help':<36}{median['help']:>10.2f}")
    print(f"{'floor: ray.init + one task':<36}{median['floor']:>10.2f}")
    print(f"{'classify one 10 s video':<36}{median['classify']:>10.2f}")
    print(f"{'classify / floor':<36}{median['classify'] / median['floor']:>10.2f}")
    if args.compare:
        print(f"compared with {args.compare}:")
        print(f"{'  vidpipe --help':<36}{median['help (compared)']:>10.2f}")
        print(f"{'  classify one 10 s video':<36}{median['classify (compared)']:>10.2f}")
    print(f"\nwhere the classify goes (median seconds from process start, and since the stage before)")
    previous = 0.0
    for stage in STAGES:
        seen = [offsets[stage] for offsets in stages if stage in offsets]
        if not seen:
            continue
        at = statistics.median(seen)
        print(f"  {stage:<22}{at:>8.2f}{at - previous:>+8.2f}")
        previous = at

    record("vidpipe --help, wall (s)", median["help"], target=0.5, higher_is_better=False,
           note="fresh process, median")
    record("classify one 10 s video, wall (s)", median["classify"], target=5.0,
           higher_is_better=False, note="fresh process incl. Ray start-up, median")
    record("Ray floor: init + one task, wall (s)", median["floor"], note="fresh process, median")
    record("classify one video / Ray floor", median["classify"] / median["floor"], target=1.5,
           higher_is_better=False, note="medians, interleaved runs")


if __name__ == "__main__":
    main()
