"""Failures of the machines rather than of a video: no ffmpeg on a node, no room for temp files,
an INPUT a node cannot see. They fail the whole job with one message naming the node, instead of
turning every video into an error row (which, under the error threshold, would exit 0).

`check_nodes` runs before a job's first video, on every alive node; `InfrastructureError` is also
raised mid-job by the decoding code when the same failures appear later. `check_model_on_nodes`
loads the job's model there too: the first place its weights load (the driver reads only the
checkpoint's config), so weights that do not load fail the job before its first video.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import tempfile

from .errors import CheckpointError
from .ffmpeg_binary import ffmpeg_exe
from .progress import mark

# errno values that say "this machine", not "this video".
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOMEM}


class InfrastructureError(Exception):
    """A node cannot do the job at all; the message is one line and names the node."""


def node_name() -> str:
    """This machine, and the Ray node when in one (loopback clusters share a hostname)."""
    try:
        import ray

        if ray.is_initialized():
            return f"{socket.gethostname()} (Ray node {ray.get_runtime_context().get_node_id()[:8]})"
    except Exception:  # naming the node must never hide the failure being reported
        pass
    return socket.gethostname()


def temp_dir() -> str | None:
    """Where remote videos are staged for ffmpeg: /dev/shm (RAM) when writable, else the default."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def find(exc: BaseException) -> InfrastructureError | None:
    """The InfrastructureError behind `exc`, through Ray's task-error wrappers, if any."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        inner = getattr(current, "cause", None)  # a RayTaskError's original exception
        if isinstance(current, InfrastructureError) and not isinstance(inner, BaseException):
            return current
        stack += [current.__cause__, current.__context__, inner]
    return None


def check_this_node(local_input: str | None, decoder: str = "ffmpeg") -> str | None:
    """What stops this node from decoding videos with `decoder` (None: nothing): the decoder
    (PyAV importable; or ffmpeg runnable, with room for the temp files it reads), the INPUT."""
    import subprocess

    where = f"node {node_name()}"
    if decoder == "pyav":
        try:
            importlib.import_module("av")  # its wheel bundles FFmpeg: nothing else to check
        except Exception as exc:
            return f"{where}: PyAV cannot load ({type(exc).__name__}: {exc})"
    else:
        try:
            subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, timeout=30, check=True)
        except Exception as exc:  # missing, not executable, broken: all mean no decoding here
            return f"{where}: ffmpeg cannot run ({type(exc).__name__}: {exc})"
        try:
            with tempfile.TemporaryFile(dir=temp_dir()) as handle:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            return (f"{where}: cannot write temp files in {temp_dir() or tempfile.gettempdir()} "
                    f"({exc.strerror})")
    if local_input is not None and not os.path.exists(local_input):
        return (f"{where} cannot see the local INPUT {local_input}: on a multi-node cluster use "
                f"shared storage (s3://...) or a path mounted on every node")
    return None


def load_model_here(checkpoint: bytes) -> str | None:
    """What stops this node from running the model (None: nothing): torch that cannot load.
    Weights that do not load raise CheckpointError, the model's failure rather than the node's."""
    from .model_store import from_checkpoint_bytes

    try:
        from_checkpoint_bytes(checkpoint).model
    except ImportError as exc:
        return f"node {node_name()}: torch cannot load ({type(exc).__name__}: {exc})"
    return None


def check_nodes(input_uri: str, decoder: str) -> None:
    """Run `check_this_node` on every alive Ray node; InfrastructureError naming the failures."""
    from . import storage

    local = None
    if storage.is_local(input_uri):
        local = os.path.abspath(input_uri.removeprefix("file://"))
        if not os.path.exists(local):
            local = None  # missing here too: the listing reports it, as on one node
    _on_every_node(check_this_node, local, decoder)
    mark("nodes checked")


def check_model_on_nodes(checkpoint) -> None:
    """Load the checkpoint's weights (`checkpoint`: an object ref to its bytes,
    model_store.LoadedModel.checkpoint_ref) on every alive Ray node, before the job's first video:
    CheckpointError when they do not load, InfrastructureError naming a node without torch.

    The driver reads only the checkpoint's config (model_config.py); this is where torch is
    imported, once per node, in a worker process that the job's first classify step on that node
    then reuses (its model loads in milliseconds there)."""
    _on_every_node(load_model_here, checkpoint)
    mark("model checked")


def _on_every_node(check, *args) -> None:
    """Run `check(*args)` (-> a problem or None) in a task on every alive node; the problems as
    one InfrastructureError. A CheckpointError raised by a check stays one (its line alone)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(check)
    pending = [remote.options(num_cpus=0, max_retries=0,
                              scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"],
                                                                                 soft=False))
               .remote(*args) for node in ray.nodes() if node.get("Alive")]
    try:
        problems = [problem for problem in ray.get(pending) if problem]
    except CheckpointError as exc:  # Ray's wrapper would add the worker's traceback
        raise CheckpointError(str(getattr(exc, "cause", exc))) from None
    if problems:
        raise InfrastructureError("; ".join(problems))
