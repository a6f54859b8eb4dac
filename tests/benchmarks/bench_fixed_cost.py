"""The fixed cost of a small job: `vidpipe --help`, classifying one 10-second video, a scan that
finds nothing to do, and the floor Ray's own start-up sets, each a fresh process, interleaved,
median of several runs (issue 20).

    .venv/bin/python tests/benchmarks/bench_fixed_cost.py [--repeats 5] [--compare DIR]
        [--clips 700]  (--repeats 0: the clips alone; --clips 0: no clips)

`--compare DIR`: also time help, classify and the no-op scan with DIR's `pipeline/` (e.g. an
export of the commit before a change), interleaved with the others; reported, not recorded.
`--clips N` (700 by default): once, after the repeats, `vidpipe classify` on N short clips
(start-up included, a fresh process) against the plain loop in one process
(inference.classify_sequential: the same sample_clip, the paper's model, torch's default threads,
one Parquet file), and against the floor plus that loop.

- help: `python -m pipeline.cli --help`, wall;
- floor: a fresh process that imports Ray, starts a local Ray (`ray.init(address="local")`,
  no dashboard, as vidpipe starts it), runs one trivial task and exits, wall;
- classify: `python -m pipeline.cli classify VIDEO OUT --model M` on one 10 s video (a fresh
  motion3d_gru, 2 s windows: 5 clips), wall; with VIDPIPE_TIMINGS set the command prints when
  each stage ended (progress.mark), which gives where its time goes;
- no-op scan: `python -m pipeline.cli scan ARCHIVE OUT --model M` over 24 short videos that an
  earlier scan (untimed) has processed: listing, diff, commit and MLflow, nothing to classify.
Targets: help <= 0.5 s; classify and the no-op scan <= 5 s, or within 1.5x of the floor where the
floor makes 5 s impossible (each run's command over that run's floor, the median of those); N
clips at least as fast as the loop, or, as Ray's start-up alone takes most of the loop's time,
within 1.5x of that floor plus the loop.
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

from pipeline.architectures import PAPER_ARCH  # noqa: E402
from pipeline.models.checkpoint import ModelConfig, save_checkpoint  # noqa: E402
from pipeline.synthetic import encode_h264, make_corpus  # noqa: E402
from results import record  # noqa: E402

FLOOR = ("import ray; ray.init(address='local', include_dashboard=False, logging_level='ERROR'); "
         "ray.get(ray.remote(lambda: 1).remote())")
MARK = re.compile(r"vidpipe timing: (.+) (\d+\.\d+)$")
# The stages a one-video classify goes through, in order (progress.mark), then the exit.
STAGES = ("parsed", "imported", "ray up", "model checked", "nodes checked", "task started",
          "model loaded", "rows staged", "committed", "exit")
SCAN_STAGES = ("parsed", "ray up", "nodes checked", "planned", "committed", "tracked", "exit")
SCAN_VIDEOS = 24


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


def scan_command(python: str, root: Path, output: str, model: Path) -> list[str]:
    return [python, "-m", "pipeline.cli", "scan", str(root / "archive"), str(root / output),
            "--model", str(model), "--mlflow-uri", f"sqlite:///{root / 'mlflow.db'}"]


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


def clips_against_loop(clips: int, root: Path) -> None:
    """`vidpipe classify` on `clips` short clips, a fresh process with its start-up, against the
    plain loop in this process; recorded."""
    from pipeline.inference import classify_sequential

    corpus = root / "clips"
    make_corpus(str(corpus), per_class=clips // 4, seed=3)
    config = ModelConfig(PAPER_ARCH, ("MoveDown", "MoveLeft", "MoveRight", "MoveUp"))
    model = root / "paper.pt"
    save_checkpoint(config.build(), config, model)
    loop = classify_sequential(str(corpus), str(root / "loop.parquet"), str(model))
    wall, _ = timed([sys.executable, "-m", "pipeline.cli", "classify", str(corpus),
                     str(root / "clips-out"), "--model", str(model)])
    # Ray's start-up alone takes most of the loop's time (5-7 s against 8-10 s here), so the loop's
    # speed is out of reach: the floor is that start-up plus the loop's own work after it.
    floor = statistics.median(timed([sys.executable, "-c", FLOOR])[0] for _ in range(3))
    videos = loop["videos"]
    print(f"\n{videos} clips: vidpipe classify {wall:.1f} s ({videos / wall:.1f} videos/s, start-up "
          f"included); plain loop {loop['wall_s']:.1f} s ({loop['videos_per_s']:.1f} videos/s, "
          f"{__import__('torch').get_num_threads()} torch threads); Ray floor {floor:.1f} s; "
          f"classify / (floor + loop) {wall / (floor + loop['wall_s']):.2f}")
    record(f"classify {videos} clips with start-up vs plain loop (videos/s)",
           loop["wall_s"] / wall, target=1.0,
           note="fresh `vidpipe classify` process / inference.classify_sequential in one process")
    record(f"classify {videos} clips / (Ray floor + plain loop)", wall / (floor + loop["wall_s"]),
           target=1.5, higher_is_better=False,
           note="wall of the fresh process / (ray.init + one task + exit, median of 3) + the loop")


def median_stages(runs: list[dict[str, float]], names: tuple[str, ...]) -> None:
    previous = 0.0
    for stage in names:
        seen = [offsets[stage] for offsets in runs if stage in offsets]
        if not seen:
            continue
        at = statistics.median(seen)
        print(f"  {stage:<22}{at:>8.2f}{at - previous:>+8.2f}")
        previous = at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR")
    parser.add_argument("--clips", type=int, default=700, metavar="N")
    args = parser.parse_args()
    python = sys.executable
    walls: dict[str, list[float]] = {"help": [], "floor": [], "classify": [], "no-op scan": []}
    if args.compare:
        walls.update({"help (compared)": [], "classify (compared)": [],
                      "no-op scan (compared)": []})
    stages: list[dict[str, float]] = []
    scan_stages: list[dict[str, float]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-fixed-") as tmp:
        root = Path(tmp)
        video, model = make_inputs(root)
        if args.repeats:
            make_corpus(str(root / "archive"), per_class=SCAN_VIDEOS // 4, seed=1)
            timed(scan_command(python, root, "scanned", model))  # the no-op scans' earlier scan
        if args.repeats and args.compare:
            timed(scan_command(python, root, "scanned-compared", model), args.compare)
        for repeat in range(args.repeats):  # interleaved: the machine's load hits all alike
            loads.append(os.getloadavg()[0])
            walls["help"].append(timed([python, "-m", "pipeline.cli", "--help"])[0])
            walls["floor"].append(timed([python, "-c", FLOOR])[0])
            started = time.time()
            wall, stderr = timed([python, "-m", "pipeline.cli", "classify", str(video),
                                  str(root / f"out-{repeat}"), "--model", str(model)])
            walls["classify"].append(wall)
            stages.append(stage_offsets(stderr, started, wall))
            started = time.time()
            wall, stderr = timed(scan_command(python, root, "scanned", model))
            walls["no-op scan"].append(wall)
            scan_stages.append(stage_offsets(stderr, started, wall))
            if args.compare:
                walls["help (compared)"].append(
                    timed([python, "-m", "pipeline.cli", "--help"], args.compare)[0])
                walls["classify (compared)"].append(timed(
                    [python, "-m", "pipeline.cli", "classify", str(video),
                     str(root / f"out-compared-{repeat}"), "--model", str(model)],
                    args.compare)[0])
                walls["no-op scan (compared)"].append(
                    timed(scan_command(python, root, "scanned-compared", model), args.compare)[0])
            print(f"run {repeat + 1}: " + ", ".join(f"{name} {values[-1]:.2f}s"
                                                  for name, values in walls.items()), flush=True)
        if args.clips:
            clips_against_loop(args.clips, root)
    if not args.repeats:  # --repeats 0 --clips N: the clips alone
        return

    median = {name: statistics.median(values) for name, values in walls.items()}
    # Each run's command over the same run's floor, then their median: the floor moves 5-7.5 s
    # from one hour to the next on this VM, and a run's floor and commands share its minute.
    ratios = {name: [wall / floor for wall, floor in zip(walls[name], walls["floor"])]
              for name in ("classify", "no-op scan")}
    ratio = {name: statistics.median(values) for name, values in ratios.items()}
    print(f"\nmedians of {args.repeats} runs; load average {statistics.median(loads):.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'':<36}{'wall (s)':>10}")
    print(f"{'vidpipe --help':<36}{median['help']:>10.2f}")
    print(f"{'floor: ray.init + one task':<36}{median['floor']:>10.2f}")
    print(f"{'classify one 10 s video':<36}{median['classify']:>10.2f}")
    print(f"{f'no-op scan of {SCAN_VIDEOS} videos':<36}{median['no-op scan']:>10.2f}")
    for name in ratios:
        print(f"{f'{name} / floor, per run':<36}{ratio[name]:>10.2f}  (median; runs "
              f"{', '.join(f'{value:.2f}' for value in ratios[name])})")
    if args.compare:
        print(f"compared with {args.compare}:")
        print(f"{'  vidpipe --help':<36}{median['help (compared)']:>10.2f}")
        print(f"{'  classify one 10 s video':<36}{median['classify (compared)']:>10.2f}")
        print(f"{f'  no-op scan of {SCAN_VIDEOS} videos':<36}"
              f"{median['no-op scan (compared)']:>10.2f}")
    print("\nwhere the classify goes (median seconds from process start, and since the stage before)")
    median_stages(stages, STAGES)
    print("where the no-op scan goes")
    median_stages(scan_stages, SCAN_STAGES)

    record("vidpipe --help, wall (s)", median["help"], target=0.5, higher_is_better=False,
           note="fresh process, median")
    record("classify one 10 s video, wall (s)", median["classify"], target=5.0,
           higher_is_better=False, note="fresh process incl. Ray start-up, median")
    record("Ray floor: init + one task, wall (s)", median["floor"], note="fresh process, median")
    record("classify one video / Ray floor", ratio["classify"], target=1.5,
           higher_is_better=False, note="median over runs of each run's classify / its floor")
    record(f"no-op scan of {SCAN_VIDEOS} videos, wall (s)", median["no-op scan"], target=5.0,
           higher_is_better=False, note="fresh process incl. Ray start-up and MLflow, median")
    record("no-op scan / Ray floor", ratio["no-op scan"], target=1.5,
           higher_is_better=False, note="median over runs of each run's scan / its floor")


if __name__ == "__main__":
    main()
