"""Which decoder a classify or scan runs, decided once on the driver before the first video
(`--decoder auto|pyav|ffmpeg|nvdec`, frames.DECODER_CHOICES):

- `pyav`, `ffmpeg`: that CPU backend; on a GPU cluster decode tasks feed the classifier actors;
- `nvdec`: the GPU actors decode themselves (decode_nvdec.py), falling back to PyAV per video;
  a usage error (DecoderUnavailable, exit 2) where the cluster has no GPUs or a GPU node cannot
  decode on NVDEC (the probe says why);
- `auto` (the default): `nvdec` where that works, else `pyav`. A CPU cluster runs as before.

`resolve` is the pure rule; `choose` asks the running Ray cluster (a probe task on one GPU).
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import DecoderUnavailable

PROBE_TIMEOUT_S = 300.0  # a GPU busy with another job may take a while to free up


def resolve(requested: str, gpus: bool, nvdec_problem: Callable[[], str | None],
            say: Callable[[str], None] = lambda line: None) -> str:
    """The decoder to run: "pyav", "ffmpeg" or "nvdec". `gpus`: whether the cluster has GPUs;
    `nvdec_problem()`: why its GPU nodes cannot decode on NVDEC (None: they can), asked only
    when it matters; `say`: told why `auto` chose PyAV on a GPU cluster."""
    if requested in ("pyav", "ffmpeg"):
        return requested
    if requested not in ("auto", "nvdec"):
        raise ValueError(f"unknown decoder {requested!r}")
    if not gpus:
        if requested == "nvdec":
            raise DecoderUnavailable("--decoder nvdec needs GPU workers and this Ray cluster has "
                                     "no GPUs; use --decoder auto or pyav")
        return "pyav"
    problem = nvdec_problem()
    if problem is None:
        return "nvdec"
    if requested == "nvdec":
        raise DecoderUnavailable(f"--decoder nvdec: the GPU workers cannot decode on NVDEC: "
                                 f"{problem}; use --decoder auto or pyav")
    say(f"decoding with PyAV on the CPUs: NVDEC is not usable on the GPU workers ({problem})")
    return "pyav"


def choose(requested: str, say: Callable[[str], None] = lambda line: None) -> str:
    """`resolve` against the connected Ray cluster."""
    from .ray_runtime import cluster_has_gpus

    return resolve(requested, cluster_has_gpus(), probe_gpu_worker, say)


def probe_gpu_worker() -> str | None:
    """decode_nvdec.nvdec_problem, run as a task holding one GPU of the cluster."""
    import ray

    probe = ray.remote(_probe).options(num_gpus=1, num_cpus=0, max_retries=0)
    try:
        return ray.get(probe.remote(), timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        return f"no GPU was free to probe NVDEC within {PROBE_TIMEOUT_S:g}s"
    except ray.exceptions.RayTaskError as exc:
        return f"the NVDEC probe failed: {type(exc.cause).__name__}: {exc.cause}"


def _probe() -> str | None:
    from .decode_nvdec import nvdec_problem

    return nvdec_problem()
