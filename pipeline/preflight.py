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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import storage
from .errors import PreflightError
from .redact import redact_uri

# A few quick tries: an MLflow server that is restarting answers within seconds, and one that is
# not there should not cost minutes of silence (MLflow's own client retries for about 4 minutes).
MLFLOW_PROBE_ATTEMPTS = 3
MLFLOW_PROBE_TIMEOUT_S = 3.0


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
        others = []  # what it holds instead, for the message
        for folder, _, files in fs.walk(root):  # stops at the first video: no full listing here
            if any(name.lower().endswith(storage.VIDEO_EXTENSIONS) for name in files):
                return
            others += [posixpath.relpath(posixpath.join(folder, name), root) for name in files]
    except PermissionError as exc:
        raise PreflightError(f"{what} {uri} cannot be read: {exc.strerror or exc}") from None
    extensions = f"video files end in {', '.join(storage.VIDEO_EXTENSIONS)}"
    if not others:
        raise PreflightError(f"{what} {uri} is empty: no files in it or below it ({extensions})")
    shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
    raise PreflightError(f"{what} {uri} has no video files in it or below it, only "
                         f"{len(others)} other file(s): {shown} ({extensions})")


def check_input_exists(uri: str, what: str = "INPUT") -> None:
    """The folder or object must exist (an empty archive is a valid thing to scan)."""
    fs, root = storage.filesystem(uri)
    if not fs.exists(root):
        raise PreflightError(f"{what} {uri} does not exist")


@contextmanager
def output_folder(uri: str, overwrite: bool | None = None) -> Iterator[None]:
    """check_output_folder around a command: when the command fails, the folders that the check
    created are removed again if nothing was written into them (a failed command leaves no empty
    OUTPUT behind)."""
    created = check_output_folder(uri, overwrite)
    try:
        yield
    except BaseException:
        _remove_empty(created)
        raise


@contextmanager
def output_file(path: str, what: str = "--out") -> Iterator[None]:
    """check_output_file around a command, as output_folder is for a folder."""
    created = check_output_file(path, what)
    try:
        yield
    except BaseException:
        _remove_empty(created)
        raise


def check_output_folder(uri: str, overwrite: bool | None = None) -> list[str]:
    """OUTPUT must be a folder we can write (creating it if needed). `overwrite`: None = existing
    contents are fine (scan); False = OUTPUT must be empty; True = replacing is allowed.
    Returns the local folders it created, the deepest first."""
    created = _check_local_folder(uri) if storage.is_local(uri) else []
    if overwrite is False:
        entries = storage.list_names(uri)
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise PreflightError(
                f"OUTPUT {uri} is not empty ({len(entries)} entries: {shown}); pass --overwrite "
                f"to replace an earlier classify result there, or choose an empty OUTPUT")
    return created


def check_output_file(path: str, what: str = "--out") -> list[str]:
    """A file we are about to write (a checkpoint): its folder must be writable, and it must not be
    a folder itself. Returns the local folders it created, the deepest first."""
    if not storage.is_local(path):
        return []
    _, local = storage.filesystem(path)
    if os.path.isdir(local):
        raise PreflightError(f"{what} {path} is a folder; give a file path such as {path.rstrip('/')}/model.pt")
    return _check_local_folder(os.path.dirname(os.path.abspath(local)),
                               what=f"{what} {path}: its folder")


def _check_local_folder(uri: str, what: str | None = None) -> list[str]:
    """The folders it had to create, the deepest first (none are left when the check fails)."""
    _, path = storage.filesystem(uri)
    path = os.path.abspath(path)
    what = what or f"OUTPUT {uri}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise PreflightError(f"{what} is an existing file, not a folder")
    created, parent = [], path
    while not os.path.exists(parent):
        created.append(parent)
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
        _remove_empty(created)
        raise PreflightError(f"{what} is not writable: {exc.strerror or exc}") from None
    return created


def _remove_empty(created: list[str]) -> None:
    """Undo the folders a check created, the deepest first; one that holds anything now stays
    (something was written), and so do its parents."""
    for folder in created:
        try:
            os.rmdir(folder)
        except OSError:
            return


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
