"""Checks that fail fast, with one line, before Ray starts and before any video is decoded.

Each check raises PreflightError with a message that names what is wrong and what to do; the CLI
prints it as `vidpipe: error: ...` (exit 1). They look only at what a command is about to use:
INPUT (missing vs empty), OUTPUT (a file, under a file, not writable, not empty), a model REF
(a checkpoint file, or a registry that exists and answers) and the MLflow server (short timeouts,
a line while retrying). Credentials in URIs never appear in a message (redact.redact_uri).
"""

from __future__ import annotations

import os
import posixpath
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from . import storage
from .redact import redact_uri

# A few quick tries: an MLflow server that is restarting answers within seconds, and one that is
# not there should not cost minutes of silence (MLflow's own client retries for about 4 minutes).
MLFLOW_PROBE_ATTEMPTS = 3
MLFLOW_PROBE_TIMEOUT_S = 3.0


class PreflightError(Exception):
    """A command cannot start: the one-line reason."""


def check_input(uri: str, what: str = "INPUT") -> None:
    """INPUT must exist and hold at least one video (a single video file is fine)."""
    fs, root = storage.filesystem(uri)
    try:
        if fs.isfile(root):
            if not root.lower().endswith(storage.VIDEO_EXTENSIONS):
                raise PreflightError(f"{what} {uri} is not a video file "
                                     f"(extensions: {', '.join(storage.VIDEO_EXTENSIONS)})")
            return
        if not fs.isdir(root):
            raise PreflightError(f"{what} {uri} does not exist")
        for _, _, files in fs.walk(root):  # stops at the first video: no full listing here
            if any(name.lower().endswith(storage.VIDEO_EXTENSIONS) for name in files):
                return
    except PermissionError as exc:
        raise PreflightError(f"{what} {uri} cannot be read: {exc.strerror or exc}") from None
    raise PreflightError(f"{what} {uri} is empty: no video files in it or below it "
                         f"(extensions: {', '.join(storage.VIDEO_EXTENSIONS)})")


def check_input_exists(uri: str, what: str = "INPUT") -> None:
    """The folder or object must exist (an empty archive is a valid thing to scan)."""
    fs, root = storage.filesystem(uri)
    if not fs.exists(root):
        raise PreflightError(f"{what} {uri} does not exist")


def check_output_folder(uri: str, overwrite: bool | None = None) -> None:
    """OUTPUT must be a folder we can write (creating it if needed). `overwrite`: None = existing
    contents are fine (scan); False = OUTPUT must be empty; True = replacing is allowed."""
    if storage.is_local(uri):
        _check_local_folder(uri)
    if overwrite is False:
        entries = storage.list_names(uri)
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise PreflightError(
                f"OUTPUT {uri} is not empty ({len(entries)} entries: {shown}); pass --overwrite "
                f"to replace an earlier classify result there, or choose an empty OUTPUT")


def check_output_file(path: str, what: str = "--out") -> None:
    """A file we are about to write (a checkpoint): its folder must be writable, and it must not be
    a folder itself."""
    if not storage.is_local(path):
        return
    _, local = storage.filesystem(path)
    if os.path.isdir(local):
        raise PreflightError(f"{what} {path} is a folder; give a file path such as {path.rstrip('/')}/model.pt")
    _check_local_folder(os.path.dirname(os.path.abspath(local)), what=f"{what} {path}: its folder")


def _check_local_folder(uri: str, what: str | None = None) -> None:
    _, path = storage.filesystem(uri)
    what = what or f"OUTPUT {uri}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise PreflightError(f"{what} is an existing file, not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PreflightError(f"{what} is under {parent}, which is a regular file")
    try:  # try it for real: permissions, read-only mounts, quotas (os.access is blind to most)
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".vidpipe-write-test-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise PreflightError(f"{what} is not writable: {exc.strerror or exc}") from None


# --- models and MLflow ------------------------------------------------------------------------


def check_model_ref(ref: str, mlflow_uri: str | None, say: Callable[[str], None] | None = None) -> None:
    """A checkpoint path must be a readable file; a registry REF needs a store that exists and
    answers (the lookup itself, with its one-line error, is model_store.load_model's)."""
    from .tracking import tracking_uri

    if ref.startswith(("models:/", "runs:/")):
        check_mlflow(tracking_uri(mlflow_uri), must_exist=True, say=say, needed_for=ref)
        return
    fs, path = storage.filesystem(ref)
    if not fs.exists(path):
        raise PreflightError(f"model {ref} does not exist (REF: a checkpoint file, "
                             f"models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model)")
    if fs.isdir(path):
        raise PreflightError(f"model {ref} is a folder, not a checkpoint file")


def check_mlflow(uri: str, must_exist: bool, say: Callable[[str], None] | None = None,
                 needed_for: str | None = None) -> None:
    """A local store (sqlite file, file: folder) must exist when `must_exist` (never create an
    empty one just to look something up); an HTTP server must answer within a few seconds."""
    reason = f" (to resolve {needed_for})" if needed_for else ""
    local = local_store_path(uri)
    if local is not None:
        if must_exist and not os.path.exists(local):
            raise PreflightError(
                f"no MLflow store at {redact_uri(uri)}{reason}; pass --mlflow-uri or set "
                f"MLFLOW_TRACKING_URI to the store that holds the model")
        return
    if uri.startswith(("http://", "https://")):
        _probe_http(uri, say, reason)


def local_store_path(uri: str) -> str | None:
    """The file or folder behind a local MLflow store URI; None for servers and other schemes."""
    if uri.startswith("sqlite:///"):
        return uri[len("sqlite:///"):]
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" not in uri:
        return uri
    return None


def _probe_http(uri: str, say: Callable[[str], None] | None, reason: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    # Credentials go into a header, never into the URL urllib may echo in an error.
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    health = urlunsplit((parts.scheme, netloc, posixpath.join(parts.path or "/", "health"), "", ""))
    request = urllib.request.Request(health)
    if parts.username:
        import base64

        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    started = time.monotonic()
    for attempt in range(1, MLFLOW_PROBE_ATTEMPTS + 1):
        try:
            urllib.request.urlopen(request, timeout=MLFLOW_PROBE_TIMEOUT_S).close()
            return
        except urllib.error.HTTPError:
            return  # it answered (401, 404 behind a proxy...): reachable; MLflow says the rest
        except (OSError, ValueError) as exc:
            failure = _describe(exc)
        if attempt < MLFLOW_PROBE_ATTEMPTS:
            if say:
                say(f"MLflow at {redact_uri(uri)} does not answer ({failure}); "
                    f"retrying ({attempt + 1}/{MLFLOW_PROBE_ATTEMPTS})")
            time.sleep(attempt)
    raise PreflightError(f"MLflow at {redact_uri(uri)} is unreachable{reason}: {failure} "
                         f"({MLFLOW_PROBE_ATTEMPTS} tries in {time.monotonic() - started:.0f}s)")


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)  # URLError wraps the socket error
    if isinstance(inner, BaseException):
        exc = inner
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact_uri(" ".join(str(text).split()))
