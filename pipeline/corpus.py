"""Labelled corpora: the UCF50 folder layout or a manifest, and the group-aware split.

Layout: ROOT/<Class>/v_<Class>_g<GG>_c<CC>.<ext>. Classes are the folder names, sorted. The group
GG is one source recording (same scene, same actor); clips of a group are near-duplicates, so a
group never straddles train and validation. A manifest (CSV or Parquet with columns
uri,label[,group]; relative URIs are relative to the manifest) may stand in for the folder.
"""

from __future__ import annotations

import posixpath
import random
import re
from dataclasses import dataclass

from .errors import CorpusError
from .storage import filesystem, list_videos

_UCF_NAME = re.compile(r"^v_.+_g(?P<group>\d+)_c(?P<clip>\d+)\.\w+$", re.IGNORECASE)
MANIFEST_EXTENSIONS = (".csv", ".parquet")


@dataclass(frozen=True)
class LabelledVideo:
    uri: str
    label: str
    group: str
    etag: str = ""  # the listing's ETag or size+mtime fingerprint; "" when not known


@dataclass(frozen=True)
class Corpus:
    videos: tuple[LabelledVideo, ...]
    class_names: tuple[str, ...]

    def label_index(self, label: str) -> int:
        return self.class_names.index(label)


def read_corpus(source: str) -> Corpus:
    """A labelled corpus from a UCF50-style folder or a manifest file (local or any fsspec URL)."""
    if source.lower().endswith(MANIFEST_EXTENSIONS):
        videos = _read_manifest(source)
    else:
        videos = _read_folder(source)
    if not videos:
        raise CorpusError(f"no labelled videos found in {source}")
    classes = tuple(sorted({video.label for video in videos}))
    return Corpus(tuple(sorted(videos, key=lambda v: v.uri)), classes)


def group_of(file_name: str) -> str:
    """The recording group from a UCF50 file name; a file without one is its own group."""
    match = _UCF_NAME.match(file_name)
    return f"g{int(match['group']):02d}" if match else posixpath.splitext(file_name)[0]


def split_by_group(videos: tuple[LabelledVideo, ...] | list[LabelledVideo],
                   val_fraction: float = 0.25, seed: int = 0
                   ) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    """Deterministic (train, val) split in which no group is on both sides.

    Groups are split as a whole across all classes (UCF50 group ids name the same kind of
    recording session in every class); at least one group goes to each side when there are two.
    """
    groups = sorted({video.group for video in videos})
    if len(groups) < 2:
        raise CorpusError("a group-aware split needs at least two groups")
    random.Random(seed).shuffle(groups)
    num_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    val_groups = set(groups[:num_val])
    train = [video for video in videos if video.group not in val_groups]
    val = [video for video in videos if video.group in val_groups]
    return train, val


def _read_folder(root: str) -> list[LabelledVideo]:
    fs, root_path = filesystem(root)
    if not fs.isdir(root_path):
        raise CorpusError(f"corpus folder not found: {root}")
    root_uri = fs.unstrip_protocol(root_path).rstrip("/")
    videos = []
    for obj in list_videos(root):
        relative = obj.uri[len(root_uri):].lstrip("/").split("/")
        if len(relative) != 2:  # only ROOT/<Class>/<file>; anything else is not part of the layout
            continue
        label, name = relative
        videos.append(LabelledVideo(obj.uri, label, group_of(name), obj.etag))
    return videos


def _read_manifest(path: str) -> list[LabelledVideo]:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    fs, manifest_path = filesystem(path)
    try:
        with fs.open(manifest_path, "rb") as handle:
            table = pq.read_table(handle) if path.lower().endswith(".parquet") else pa_csv.read_csv(handle)
    except FileNotFoundError:
        raise CorpusError(f"manifest not found: {path}") from None
    except Exception as exc:
        raise CorpusError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None
    missing = {"uri", "label"} - set(table.column_names)
    if missing:
        raise CorpusError(f"manifest {path} lacks column(s): {', '.join(sorted(missing))}")
    base = fs.unstrip_protocol(posixpath.dirname(manifest_path))
    rows = table.to_pylist()
    videos = []
    for row in rows:
        uri = str(row["uri"])
        if "://" not in uri and not uri.startswith("/"):
            uri = posixpath.join(base, uri)
        name = posixpath.basename(uri)
        group = row.get("group")
        videos.append(LabelledVideo(uri, str(row["label"]),
                                    str(group) if group is not None else group_of(name),
                                    str(row.get("etag") or "")))
    return videos
