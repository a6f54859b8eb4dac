"""One writer at a time per OUTPUT, and the fence on every commit: the lease, OUTPUT/_lease.json.

Both `classify` and `scan` hold it while they run (commit.OutputWriter). Its body names the
holder (run id, host, pid), its duration, a generation that grows with every new holder, and
`accepted`: the runs whose commit intent was accepted and not yet settled.

Every change is a compare-and-swap at the store, so a writer whose lease was taken over cannot
pass one, whatever it believes:
- S3: conditional writes. Creating uses `If-None-Match: *`; renewing, accepting, taking over and
  releasing use `If-Match: <ETag of the lease we hold>`. A competitor's write changes the ETag.
  Before the first lease on an S3 endpoint the store is probed (`verify`): one create twice, one
  write with a wrong ETag; a store that lets either through is refused (LeaseUnsupported).
- Local folders: read-check-write under an exclusive `flock` on OUTPUT/_lease.lock (one host).
- Other stores have no conditional writes that vidpipe can use: refused.

The commit point of a run is `accept(run_id)`: the CAS that adds its intent to `accepted`
(commit.py). A writer that stalled past its lease fails that CAS and commits nothing; one that
passed it and stalls afterwards has its run rolled forward by the next holder, which inherits
`accepted` when it takes over. An intent that was never accepted is rolled back.

Expiry is judged on the store's clock, never on a host's: a lease is stale when the store's time
now minus the store's time of its last write exceeds the holder's duration (S3: the Date and
Last-Modified headers of one GET; a folder: the mtime the file system stamps on a probe file
beside the lease). A holder on this very host whose process no longer exists is stale at once.
The holder renews from a heartbeat thread (every quarter of its duration) and gives up, marking
the lease lost, once it has not renewed for a whole duration by its own monotonic clock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from . import storage
from .errors import LeaseHeld, LeaseLost, LeaseUnsupported

LEASE_FILE = "_lease.json"
DEFAULT_SECONDS = 300.0


@dataclass(frozen=True)
class Snapshot:
    """The lease as one read saw it: its body, its CAS token, and seconds since its last write,
    both times on the store's clock."""

    body: dict
    token: str
    age_s: float


class Lease:
    def __init__(self, output: str, run_id: str, seconds: float = DEFAULT_SECONDS):
        self.output, self.run_id, self.seconds = output, run_id, seconds
        self.uri = storage.join(output, LEASE_FILE)
        self.store = store_for(self.uri)
        self.token: str | None = None
        self.generation = 0
        self.inherited: list[str] = []  # accepted intents of earlier holders, for commit.recover
        self.lost: str | None = None
        self._accepted: list[str] = []
        self._lock = threading.Lock()  # the heartbeat and the run both write the lease
        self._renewed = 0.0  # time.monotonic() when the last successful write was sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The runs use the lease as a context manager: held (and renewed) for the block, released after.
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
        self.store.verify()
        with self._lock:
            sent = time.monotonic()
            self.generation = 1
            token = self.store.create(self._body())
            if token is None:
                current = self.store.read()
                if current is None:  # released and removed between our create and our read
                    token = self.store.create(self._body())
                else:
                    holder = current.body
                    if not holder.get("released") and not _is_stale(current):
                        raise LeaseHeld(_held_message(self.output, current))
                    self.generation = int(holder.get("generation", 0)) + 1
                    self.inherited = list(holder.get("accepted", []))
                    self._accepted = list(self.inherited)
                    token = self.store.replace(self._body(), current.token)
            if token is None:
                raise LeaseHeld(f"{self.output}: another run took the lease at the same moment; "
                                f"try again later")
            self.token, self._renewed = token, sent

    def renew(self) -> None:
        with self._lock:
            self._write()

    def check(self) -> None:
        """Raise LeaseLost unless this run still holds the lease (renewing it now)."""
        self.renew()

    def accept(self, run_id: str) -> None:
        """The commit point: record `run_id`'s intent as accepted, in one CAS. Raises LeaseLost
        (the intent is then not accepted and must be rolled back) when the lease is not ours."""
        with self._lock:
            self._accepted.append(run_id)
            try:
                self._write()
            except LeaseLost:
                self._accepted.remove(run_id)
                raise

    def settle(self, run_ids: list[str]) -> None:
        """Drop committed (or rolled back) runs from `accepted`."""
        with self._lock:
            self._accepted = [run for run in self._accepted if run not in run_ids]
            self._write()

    def accepted(self) -> list[str]:
        return list(self._accepted)

    def release(self) -> None:
        """Mark the lease released (a CAS; never a plain delete), keeping `accepted` for the next
        holder when a commit did not settle. Best effort: an unreleased lease expires."""
        with self._lock:
            if self.token is not None and not self.lost:
                with contextlib.suppress(Exception):
                    self.store.replace({**self._body(), "released": True}, self.token)
            self.token = None

    def _write(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost)
        sent = time.monotonic()
        if sent - self._renewed > self.seconds:  # others may have judged it stale already
            self.lost = (f"the lease on {self.output} was not renewed within {self.seconds:g} s, "
                         f"so another run may have taken it over")
            raise LeaseLost(self.lost)
        token = self.store.replace(self._body(), self.token)
        if token is None:
            self.lost = f"the lease on {self.output} was taken over by another run"
            raise LeaseLost(self.lost)
        self.token, self._renewed = token, sent

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception as exc:  # a storage hiccup: try again until the lease runs out
                print(f"warning: lease renewal failed ({type(exc).__name__}); retrying",
                      file=sys.stderr, flush=True)

    def _body(self) -> dict:
        return {"run_id": self.run_id, "host": socket.gethostname(), "boot_id": _boot_id(),
                "pid": os.getpid(), "seconds": self.seconds, "generation": self.generation,
                "accepted": list(self._accepted), "released": False,
                "renewed_at": datetime.now().astimezone().isoformat(timespec="seconds")}


def _is_stale(current: Snapshot) -> bool:
    holder = current.body
    if current.age_s > float(holder.get("seconds", DEFAULT_SECONDS)):
        return True
    same_machine = holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id()
    return same_machine and not _pid_alive(int(holder.get("pid", 0)))


def _held_message(output: str, current: Snapshot) -> str:
    holder = current.body
    left = max(0.0, float(holder.get("seconds", DEFAULT_SECONDS)) - current.age_s)
    return (f"{output} is being written by run {holder.get('run_id')} on {holder.get('host')} "
            f"(pid {holder.get('pid')}); its lease runs out in {left:.0f} s unless renewed. "
            f"A second run into the same OUTPUT is refused; try again later")


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
# verify() raises LeaseUnsupported unless conditional writes hold; create(body) -> token | None
# (exists); read() -> Snapshot | None; replace(body, token) -> new token | None (token no longer
# current, or the lease is gone).


def store_for(uri: str):
    if storage.is_local(uri):
        return _LocalStore(uri)
    if uri.split("://", 1)[0].lower() in ("s3", "s3a"):
        return _S3Store(uri)
    raise LeaseUnsupported(
        f"{uri.split('://', 1)[0]}:// has no conditional writes that vidpipe can fence writers "
        f"with; write OUTPUT to S3 or to a local folder")


_verified: set[str] = set()  # S3 endpoints (and buckets) whose conditional writes were probed


class _S3Store:
    def __init__(self, uri: str):
        self.fs, self.path = storage.filesystem(uri)

    def verify(self) -> None:
        """Probe the endpoint once per process: a second create of one object and a write with a
        wrong ETag must both be refused."""
        bucket = self.path.split("/", 1)[0]
        endpoint = storage.endpoint_url() or "AWS S3"
        if (endpoint, bucket) in _verified:
            return
        probe = f"{self.path}.probe-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.pipe_file(probe, b"1", mode="create")
            second = _refused_by(lambda: self.fs.pipe_file(probe, b"2", mode="create"))
            wrong_etag = _refused_by(lambda: self.fs.pipe_file(probe, b"3", IfMatch='"0"'))
        finally:
            with contextlib.suppress(Exception):
                self.fs.rm_file(probe)
        if not (second and wrong_etag):
            raise LeaseUnsupported(
                f"the S3 endpoint {endpoint} ignores conditional writes (If-None-Match / "
                f"If-Match), so vidpipe cannot keep two runs from writing s3://{bucket} at once. "
                f"Use AWS S3 or a store that honours them; a local lock does not work across hosts")
        _verified.add((endpoint, bucket))

    def create(self, body: dict) -> str | None:
        try:
            response = self.fs.pipe_file(self.path, _encode(body), mode="create")
        except FileExistsError:
            return None
        except OSError as exc:
            if _precondition_failed(exc):
                return None
            raise
        return _etag(response)

    def read(self) -> Snapshot | None:
        """Body, ETag and age from one GET, so that all three describe the same version."""
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(self.path)

        async def get():
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            return await response["Body"].read(), response

        try:
            data, response = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        store_now = parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (store_now - response["LastModified"]).total_seconds()
        return Snapshot(json.loads(data), response["ETag"].strip('"'), age)

    def replace(self, body: dict, token: str) -> str | None:
        try:
            response = self.fs.pipe_file(self.path, _encode(body), IfMatch=f'"{token}"')
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _precondition_failed(exc):
                return None
            raise
        return _etag(response)


def _etag(response: dict) -> str:
    return response["ETag"].strip('"')


def _precondition_failed(exc: BaseException) -> bool:
    """A refused condition: 412 PreconditionFailed, or 409 ConditionalRequestConflict (a
    concurrent conditional write). s3fs maps 412 and other 400s alike to EINVAL; the botocore
    error it chains tells them apart, so an InvalidArgument is not taken for a lost lease."""
    response = getattr(exc.__cause__, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _refused_by(write) -> bool:
    try:
        write()
    except FileExistsError:
        return True
    except OSError as exc:
        if _precondition_failed(exc) or exc.errno == errno.EEXIST:
            return True
        raise
    return False


class _LocalStore:
    def __init__(self, uri: str):
        self.path = os.path.abspath(uri.removeprefix("file://"))
        self.lock_path = os.path.join(os.path.dirname(self.path), "_lease.lock")
        self.clock_path = os.path.join(os.path.dirname(self.path), "_lease.clock")

    def verify(self) -> None:
        """flock holds on a local file system; nothing to probe."""

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

    def read(self) -> Snapshot | None:
        with self._locked():
            return self._read()

    def replace(self, body: dict, token: str) -> str | None:
        with self._locked():
            current = self._read()
            if current is None or current.token != token:
                return None
            return self._write(body)

    def _read(self) -> Snapshot | None:
        try:
            with open(self.path) as handle:
                body = json.load(handle)
            written = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        with open(self.clock_path, "w"):  # the file system's time now, stamped on a probe
            pass
        return Snapshot(body, body.get("token", ""), os.stat(self.clock_path).st_mtime - written)

    def _write(self, body: dict) -> str:
        token = uuid.uuid4().hex
        storage.write_json(self.path, {**body, "token": token})
        return token


def _encode(body: dict) -> bytes:
    return json.dumps(body, indent=1).encode()
