"""One scan at a time per OUTPUT: a lease object, OUTPUT/_lease.json, with an owner and an expiry.

The holder renews it from a heartbeat thread (every quarter of its duration); a run that finds a
live lease held by someone else stops with `LeaseHeld` (a one-line message naming the holder). A
lease past its expiry, or one whose holder was a process on this very host that no longer exists,
is stale and is taken over, so a killed scan does not block the next one.

Every change is a compare-and-swap, so that two runs can never both believe they hold it:
- S3: conditional writes. Creating uses `If-None-Match: *`; renewing, taking over and releasing
  use `If-Match: <ETag of the lease we read>`. A competitor's write changes the ETag and ours fails.
- Local folders: read-check-write under an exclusive `flock` on OUTPUT/_lease.lock.
- Other fsspec stores (no conditional writes): write, then read back and compare the owner. Two
  runs that write within the same read-back window (milliseconds) can both proceed; documented,
  not prevented.
A holder that cannot renew before its lease expires (a long network partition) notices: `check()`
raises `LeaseLost`, and the scan checks before it commits. Expiry compares wall clocks of hosts;
the default duration (300 s) dwarfs any sane clock skew.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

from . import storage

LEASE_FILE = "_lease.json"
DEFAULT_SECONDS = 300.0


class LeaseHeld(Exception):
    """Another live run holds the lease; the message says who and until when."""


class LeaseLost(Exception):
    """This run's lease was taken over (it could not be renewed in time); nothing was committed."""


class Lease:
    def __init__(self, output: str, run_id: str, seconds: float = DEFAULT_SECONDS):
        self.output, self.run_id, self.seconds = output, run_id, seconds
        self.uri = storage.join(output, LEASE_FILE)
        self.store = _store_for(self.uri)
        self.token: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The scan uses the lease as a context manager: held (and renewed) for the block, released after.
    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._heartbeat, name="vidpipe-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.release()

    def acquire(self) -> None:
        body = self._body()
        token = self.store.create(body)
        if token is None:
            current = self.store.read()
            if current is not None:
                holder, current_token = current
                if not _is_stale(holder):
                    raise LeaseHeld(_held_message(self.output, holder))
                token = self.store.replace(body, current_token)
            else:  # released between our create and our read: try once more
                token = self.store.create(body)
            if token is None:
                raise LeaseHeld(f"{self.output}: another scan took the lease at the same moment")
        self.token = token

    def renew(self) -> None:
        token = self.store.replace(self._body(), self.token)
        if token is None:
            raise LeaseLost(f"the lease on {self.output} was taken over by another run")
        self.token = token

    def check(self) -> None:
        """Raise LeaseLost unless this run still holds a live lease (renewing it now)."""
        if self.lost:
            raise LeaseLost(self.lost)
        self.renew()

    def release(self) -> None:
        if self.token is not None and not self.lost:
            with contextlib.suppress(Exception):
                self.store.delete(self.token)
        self.token = None

    def _heartbeat(self) -> None:
        interval = self.seconds / 4
        last_renewal = time.time()
        while not self._stop.wait(interval):
            try:
                self.renew()
                last_renewal = time.time()
            except LeaseLost as exc:
                self.lost = str(exc)
                return
            except Exception as exc:  # a storage hiccup: try again, unless the lease ran out
                if time.time() - last_renewal > self.seconds:
                    self.lost = f"could not renew the lease on {self.output} in time ({type(exc).__name__})"
                    return
                print(f"warning: lease renewal failed ({type(exc).__name__}); retrying",
                      file=sys.stderr, flush=True)

    def _body(self) -> dict:
        now = time.time()
        return {"run_id": self.run_id, "host": socket.gethostname(), "boot_id": _boot_id(),
                "pid": os.getpid(), "renewed_at": now, "expires_at": now + self.seconds,
                "expires": datetime.fromtimestamp(now + self.seconds, timezone.utc).isoformat()}


def _is_stale(holder: dict) -> bool:
    if time.time() > float(holder.get("expires_at", 0)):
        return True
    same_machine = holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id()
    return same_machine and not _pid_alive(int(holder.get("pid", 0)))


def _held_message(output: str, holder: dict) -> str:
    return (f"{output} is being scanned by run {holder.get('run_id')} on {holder.get('host')} "
            f"(pid {holder.get('pid')}); its lease expires at {holder.get('expires')} unless "
            f"renewed. A second scan of the same OUTPUT is refused; try again later")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


# --- compare-and-swap stores --------------------------------------------------------------------
# create(body) -> token | None (exists); read() -> (body, token) | None; replace(body, token) ->
# new token | None (token no longer current); delete(token).


def _store_for(uri: str):
    if storage.is_local(uri):
        return _LocalStore(uri)
    if uri.split("://", 1)[0].lower() in ("s3", "s3a"):
        return _S3Store(uri)
    return _ReadBackStore(uri)


class _S3Store:
    def __init__(self, uri: str):
        self.fs, self.path = storage.filesystem(uri)

    def create(self, body: dict) -> str | None:
        try:
            response = self.fs.pipe_file(self.path, _encode(body), mode="create")
        except FileExistsError:
            return None
        return _etag(response) or self._etag()

    def read(self) -> tuple[dict, str] | None:
        try:
            data = self.fs.cat_file(self.path)
            info = self.fs.info(self.path)
        except FileNotFoundError:
            return None
        return json.loads(data), info["ETag"].strip('"')

    def replace(self, body: dict, token: str) -> str | None:
        try:
            response = self.fs.pipe_file(self.path, _encode(body), IfMatch=f'"{token}"')
        except (FileNotFoundError, OSError) as exc:
            if _precondition_failed(exc):
                return None
            raise
        return _etag(response) or self._etag()

    def delete(self, token: str) -> None:
        current = self.read()
        if current is not None and current[1] == token:
            self.fs.rm_file(self.path)

    def _etag(self) -> str:
        return self.fs.info(self.path)["ETag"].strip('"')


def _etag(response) -> str | None:
    return response.get("ETag", "").strip('"') or None if isinstance(response, dict) else None


def _precondition_failed(exc: BaseException) -> bool:
    # s3fs maps 412 PreconditionFailed (If-Match) to OSError(EINVAL) and a missing key to
    # FileNotFoundError: both mean the lease we read is no longer there.
    import errno

    return isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.EINVAL


class _LocalStore:
    def __init__(self, uri: str):
        self.path = os.path.abspath(uri.removeprefix("file://"))
        self.lock_path = os.path.join(os.path.dirname(self.path), "_lease.lock")

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self, body: dict) -> str | None:
        with self._locked():
            if os.path.exists(self.path):
                return None
            return self._write(body)

    def read(self) -> tuple[dict, str] | None:
        with self._locked():
            return self._read()

    def replace(self, body: dict, token: str) -> str | None:
        with self._locked():
            current = self._read()
            if current is None or current[1] != token:
                return None
            return self._write(body)

    def delete(self, token: str) -> None:
        with self._locked():
            current = self._read()
            if current is not None and current[1] == token:
                os.remove(self.path)

    def _read(self) -> tuple[dict, str] | None:
        try:
            with open(self.path) as handle:
                body = json.load(handle)
        except FileNotFoundError:
            return None
        return body, body.get("token", "")

    def _write(self, body: dict) -> str:
        token = uuid.uuid4().hex
        storage.write_json(self.path, {**body, "token": token})
        return token


class _ReadBackStore:
    """No conditional writes: write, read back, compare (see the module docstring's caveat)."""

    def __init__(self, uri: str):
        self.uri = uri

    def create(self, body: dict) -> str | None:
        if storage.read_json(self.uri) is not None:
            return None
        return self._write(body)

    def read(self) -> tuple[dict, str] | None:
        body = storage.read_json(self.uri)
        return None if body is None else (body, body.get("token", ""))

    def replace(self, body: dict, token: str) -> str | None:
        current = self.read()
        if current is None or current[1] != token:
            return None
        return self._write(body)

    def delete(self, token: str) -> None:
        current = self.read()
        if current is not None and current[1] == token:
            storage.remove(self.uri)

    def _write(self, body: dict) -> str | None:
        token = uuid.uuid4().hex
        storage.write_json(self.uri, {**body, "token": token})
        time.sleep(0.5)  # let a competing writer land, then see who won
        current = self.read()
        return token if current is not None and current[1] == token else None


def _encode(body: dict) -> bytes:
    return json.dumps(body, indent=1).encode()
