"""URIs -> filesystems; streaming listings of video objects with size and ETag (or fingerprint);
small atomic writes and publishing of finished files.

Local paths, file://, s3:// (through s3fs) and any other fsspec URL. S3 credentials come only from
the standard AWS chain. The S3 endpoint is one process-wide setting: `configure(endpoint_url=...)`
(the CLI's --s3-endpoint-url), else AWS_ENDPOINT_URL. Ray workers read AWS_ENDPOINT_URL from their
environment, as they read credentials: `ray_runtime.ensure_ray` passes `worker_env()` as the job's
runtime_env, and a Ray started elsewhere must have it in its environment. Nothing here decodes video.

Listings stream: `list_prefix` yields Arrow tables of LISTING_BLOCK_ROWS objects, and
`child_prefixes` returns only the folder names of one level, so that a caller (Ray tasks, see
listing.listing_dataset) can list an archive without any one process holding all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import fsspec
import pyarrow as pa
from fsspec.core import url_to_fs

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
# One listed video: the first three columns of every prediction row.
LISTING_SCHEMA = pa.schema([("video_uri", pa.string()), ("video_etag", pa.string()),
                            ("video_bytes", pa.int64())])
LISTING_BLOCK_ROWS = 100

_endpoint_url: str | None = None


def configure(endpoint_url: str | None = None) -> None:
    """Set this process's S3 endpoint (None: AWS_ENDPOINT_URL, else AWS itself)."""
    global _endpoint_url
    _endpoint_url = endpoint_url or None


def endpoint_url() -> str | None:
    return _endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def worker_env() -> dict[str, str]:
    """Environment variables Ray workers need to reach the same storage as this process."""
    endpoint = endpoint_url()
    return {"AWS_ENDPOINT_URL": endpoint} if endpoint else {}


@dataclass(frozen=True)
class VideoObject:
    uri: str
    size: int
    etag: str
    mtime: datetime | None


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URI."""
    options = {}
    if _scheme(uri) in ("s3", "s3a"):
        if endpoint := endpoint_url():
            options["endpoint_url"] = endpoint
        options["use_listings_cache"] = False  # a scanner must see the store as it is now
    return url_to_fs(uri, **options)


def is_local(uri: str) -> bool:
    return _scheme(uri) == "file"


def list_videos(uri: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[VideoObject]:
    """Every object under `uri` (recursively) whose name ends in a video extension, sorted by URI.

    `uri` may also name a single object. For corpora and small inputs; archives are listed by
    `list_prefix` in tasks.
    """
    fs, root = filesystem(uri)
    if fs.isfile(root):
        entries = {root: fs.info(root)}
    else:
        entries = fs.find(root, detail=True)
    videos = [_video_object(fs, path, info) for path, info in entries.items()
              if _is_video(path, info, extensions)]
    return sorted(videos, key=lambda video: video.uri)


def child_prefixes(uri: str) -> list[str]:
    """The folders (S3: common prefixes) directly under `uri`, as URIs. Only names come back;
    the level's files are listed by `list_prefix(uri, recursive=False)`."""
    fs, root = filesystem(uri)
    return sorted(fs.unstrip_protocol(info["name"]) for info in fs.ls(root, detail=True)
                  if info.get("type") == "directory")


def listing_units(uri: str, wanted: int, max_depth: int = 2) -> list[tuple[str, bool]]:
    """Split the listing of `uri` into disjoint units (prefix, recursive) for `list_prefix`:
    descending up to `max_depth` folder levels until there are about `wanted` units. Each level
    expanded contributes its own files as one non-recursive unit."""
    units: list[tuple[str, bool]] = []
    frontier = [uri]
    for _ in range(max_depth):
        if not frontier or len(units) + len(frontier) >= wanted:
            break
        expanded = []
        for prefix in frontier:
            units.append((prefix, False))
            expanded += child_prefixes(prefix)
        frontier = expanded
    return units + [(prefix, True) for prefix in frontier]


def list_prefix(uri: str, recursive: bool, extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
                block_rows: int = LISTING_BLOCK_ROWS) -> Iterator[pa.Table]:
    """The videos under `uri` (all of them, or only this level's), as LISTING_SCHEMA tables of at
    most `block_rows` rows. A missing prefix lists nothing."""
    fs, root = filesystem(uri)
    try:
        if recursive:
            entries = fs.find(root, detail=True).items()
        else:
            entries = ((info["name"], info) for info in fs.ls(root, detail=True))
    except FileNotFoundError:
        return
    rows = []
    for path, info in entries:
        if _is_video(path, info, extensions):
            video = _video_object(fs, path, info)
            rows.append({"video_uri": video.uri, "video_etag": video.etag,
                         "video_bytes": video.size})
            if len(rows) == block_rows:
                yield pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)


def single_object(uri: str) -> pa.Table | None:
    """The listing of `uri` when it names one video object, else None."""
    fs, path = filesystem(uri)
    if not fs.isfile(path):
        return None
    video = _video_object(fs, path, fs.info(path))
    return pa.Table.from_pylist([{"video_uri": video.uri, "video_etag": video.etag,
                                  "video_bytes": video.size}], schema=LISTING_SCHEMA)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


# Range reads of this size when decoding: sampling a long video reads only the parts it needs.
VIDEO_BLOCK_BYTES = 4 * 1024 * 1024


def open_video(uri: str):
    """A video for decoding: a local path as it is (FFmpeg reads it directly), else a seekable
    fsspec file that fetches VIDEO_BLOCK_BYTES ranges on demand instead of the whole object.
    A context manager either way; storage errors propagate (the caller decides on a retry)."""
    from contextlib import nullcontext

    if is_local(uri):
        return nullcontext(uri.removeprefix("file://"))
    fs, path = filesystem(uri)
    return fs.open(path, "rb", block_size=VIDEO_BLOCK_BYTES, cache_type="readahead")


def opened_version(source, uri: str) -> str | None:
    """The ETag (or fingerprint) of the object `source` reads, as a listing gives it: for an
    fsspec file, the details it was opened with (s3fs pins that ETag: its range reads ask for it
    with IfMatch and fail with FileExpired once the object changes); for a local path
    (`open_video` hands FFmpeg the path), the file's size and mtime now. None when the source
    says nothing about its version."""
    if isinstance(source, str):
        return fingerprint(uri)
    details = getattr(source, "details", None)
    fs = getattr(source, "fs", None)
    if not details or fs is None:
        return None
    return _video_object(fs, details.get("name") or source.path, details).etag


def fingerprint(uri: str) -> str:
    """The ETag (or size+mtime fingerprint) of one object, as a listing would give it."""
    fs, path = filesystem(uri)
    return _video_object(fs, path, fs.info(path)).etag


def arrow_destination(uri: str):
    """(path, pyarrow filesystem or None) for Ray Data's read/write_parquet on `uri`."""
    if is_local(uri):
        return os.path.abspath(uri.removeprefix("file://")), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(uri)
    return path, PyFileSystem(FSSpecHandler(fs))


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri.rstrip("/"), *parts)


# --- small files and publishing, for commit records and leases --------------------------------


def write_json(uri: str, value) -> None:
    """Write JSON so that a reader sees the old content or the new, never a torn file (local:
    temp file + rename; object stores: one PUT)."""
    write_bytes(uri, json.dumps(value, indent=1, default=str).encode())


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    if is_local(uri):
        tmp = _local_temp_file(path, data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def create_json(uri: str, value) -> bool:
    """Write JSON only if nothing is at `uri` yet, atomically (local: a hard link of a finished
    temp file; S3: a PUT with If-None-Match: *). Returns False, writing nothing, when something is."""
    data = json.dumps(value, indent=1, default=str).encode()
    fs, path = filesystem(uri)
    if is_local(uri):
        tmp = _local_temp_file(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def _local_temp_file(path: str, data: bytes) -> str:
    """`data` written whole to a new temp file beside `path` (for an atomic rename or link)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    return tmp


def read_json(uri: str):
    """The JSON at `uri`, or None when there is none."""
    fs, path = filesystem(uri)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def publish(source: str, target: str) -> None:
    """Copy a finished file to its final name, atomically and idempotently: a reader sees the
    whole file or none, and publishing again rewrites the same bytes (S3: a server-side copy;
    local: copy to a temp name beside the target, then rename)."""
    fs, source_path = filesystem(source)
    _, target_path = filesystem(target)
    if is_local(source):
        os.makedirs(os.path.dirname(target_path), exist_ok=True)
        tmp = f"{target_path}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(source_path, tmp)
        os.replace(tmp, target_path)
    else:
        fs.copy(source_path, target_path)


def remove(uri: str, recursive: bool = False) -> None:
    """Delete a file (or a folder with `recursive`); a missing one is fine."""
    fs, path = filesystem(uri)
    try:
        fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass


def list_names(uri: str) -> list[str]:
    """The entry names directly under a folder URI (none when it does not exist)."""
    fs, path = filesystem(uri)
    try:
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


# --- internals ----------------------------------------------------------------------------------


def _is_video(path: str, info: dict, extensions: tuple[str, ...]) -> bool:
    return info.get("type", "file") == "file" and path.lower().endswith(extensions)


def _video_object(fs: fsspec.AbstractFileSystem, path: str, info: dict) -> VideoObject:
    size = int(info.get("size") or 0)
    mtime = _mtime(info)
    etag = (info.get("ETag") or info.get("etag") or "").strip('"')
    if not etag:  # no ETag (local disk, some stores): fingerprint size and modification time
        stamp = mtime.isoformat() if mtime else ""
        etag = "fp-" + hashlib.sha1(f"{size}:{stamp}".encode()).hexdigest()[:16]
    return VideoObject(uri=fs.unstrip_protocol(path), size=size, etag=etag, mtime=mtime)


def _mtime(info: dict) -> datetime | None:
    """The modification time in UTC, so that every host and time zone fingerprints alike."""
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=timezone.utc)
    return None


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"
