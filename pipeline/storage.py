"""URIs -> filesystems, and listings of video objects with size, ETag (or fingerprint) and mtime.

Local paths, file://, s3:// (through s3fs) and any other fsspec URL. S3 honours the standard AWS
credential chain and AWS_ENDPOINT_URL; `endpoint_url` overrides it. Nothing here decodes video.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime

import fsspec
from fsspec.core import url_to_fs

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass(frozen=True)
class VideoObject:
    uri: str
    size: int
    etag: str
    mtime: datetime | None


def filesystem(uri: str, endpoint_url: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URI; `endpoint_url` points S3 at a non-AWS endpoint."""
    options = {}
    if _scheme(uri) in ("s3", "s3a"):
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
    return url_to_fs(uri, **options)


def list_videos(uri: str, endpoint_url: str | None = None,
                extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[VideoObject]:
    """Every object under `uri` (recursively) whose name ends in a video extension, sorted by URI.

    `uri` may also name a single object.
    """
    fs, root = filesystem(uri, endpoint_url)
    if fs.isfile(root):
        entries = {root: fs.info(root)}
    else:
        entries = fs.find(root, detail=True)
    videos = [
        _video_object(fs, path, info)
        for path, info in entries.items()
        if info.get("type", "file") == "file" and path.lower().endswith(extensions)
    ]
    return sorted(videos, key=lambda video: video.uri)


def read_bytes(uri: str, endpoint_url: str | None = None) -> bytes:
    fs, path = filesystem(uri, endpoint_url)
    return fs.cat_file(path)


def fingerprint(uri: str, endpoint_url: str | None = None) -> str:
    """The ETag (or size+mtime fingerprint) of one object, as a listing would give it."""
    fs, path = filesystem(uri, endpoint_url)
    return _video_object(fs, path, fs.info(path)).etag


def arrow_destination(uri: str, endpoint_url: str | None = None):
    """(path, pyarrow filesystem or None) for Ray Data's read/write_parquet on `uri`."""
    if "://" not in uri or uri.startswith("file://"):
        return os.path.abspath(uri.removeprefix("file://")), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(uri, endpoint_url)
    return path, PyFileSystem(FSSpecHandler(fs))


def _video_object(fs: fsspec.AbstractFileSystem, path: str, info: dict) -> VideoObject:
    size = int(info.get("size") or 0)
    mtime = _mtime(info)
    etag = (info.get("ETag") or info.get("etag") or "").strip('"')
    if not etag:  # no ETag (local disk, some stores): fingerprint size and modification time
        stamp = mtime.isoformat() if mtime else ""
        etag = "fp-" + hashlib.sha1(f"{size}:{stamp}".encode()).hexdigest()[:16]
    return VideoObject(uri=fs.unstrip_protocol(path), size=size, etag=etag, mtime=mtime)


def _mtime(info: dict) -> datetime | None:
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value).astimezone()
    return None


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"
