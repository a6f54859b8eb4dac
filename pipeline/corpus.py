"""Labelled corpora: the UCF50 folder layout or a manifest, and the group-aware split.

Layout: ROOT/<Class>/v_<Class>_g<GG>_c<CC>.<ext>. Classes are the folder names, sorted. The group
GG is one source recording (same scene, same actor); clips of a group are near-duplicates, so a
group never straddles train and validation. A manifest (CSV or Parquet with columns
uri,label[,group]; relative URIs are relative to the manifest) may stand in for the folder.

A manifest row may also name one segment of its video (columns segment, start_s, end_s, as
`vidpipe export-uncertain --format manifest` writes them): the label is that segment's, and its
clip is the very window the scan classified (`LabelledVideo.window_seconds`). `read_labels` reads
such a manifest once a person has filled its `label` column, to add to a corpus of known classes.
"""

from __future__ import annotations

import posixpath
import random
import re
from dataclasses import dataclass

from .errors import CorpusError
from .frame_plan import window_of_segment
from .storage import filesystem, list_videos

_UCF_NAME = re.compile(r"^v_.+_g(?P<group>\d+)_c(?P<clip>\d+)\.\w+$", re.IGNORECASE)
MANIFEST_EXTENSIONS = (".csv", ".parquet")


@dataclass(frozen=True)
class LabelledVideo:
    uri: str
    label: str
    group: str
    etag: str = ""  # the listing's ETag or size+mtime fingerprint; "" when not known
    # One labelled segment, not the whole video: the window index and the window length that
    # cut the video into segments (segments.decode_video with it gives back the same clip).
    segment: int | None = None
    window_seconds: float | None = None

    @property
    def key(self) -> str:
        """What tells two labelled clips apart: the URI, and the segment if it is one."""
        return self.uri if self.segment is None else f"{self.uri}#{self.segment}"


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
    return Corpus(tuple(sorted(videos, key=lambda v: v.key)), classes)


@dataclass(frozen=True)
class Labels:
    """The filled rows of a labelling manifest, and how many rows had no label yet."""

    videos: tuple[LabelledVideo, ...]
    unlabelled: int


def read_labels(path: str, class_names: tuple[str, ...]) -> Labels:
    """The labelled rows of a manifest (export-uncertain's, once filled), for a corpus of
    `class_names`. Rows with an empty label are left out and counted. A label outside the class
    set is an error, not a new class: a typo must not add an output to the model, and a new class
    needs examples of its own (a folder of them)."""
    rows = _manifest_rows(path)
    labelled = [row for row in rows if str(row.get("label") or "").strip()]
    unknown = sorted({str(row["label"]).strip() for row in labelled} - set(class_names))
    if unknown:
        raise CorpusError(f"labels in {path} that are not classes of the corpus: "
                          f"{', '.join(unknown)} (classes: {', '.join(class_names)})")
    videos = [_labelled_video(path, {**row, "label": str(row["label"]).strip()})
              for row in labelled]
    return Labels(tuple(sorted(videos, key=lambda v: v.key)), len(rows) - len(labelled))


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
    rows = _manifest_rows(path)
    unlabelled = sum(1 for row in rows if not str(row.get("label") or "").strip())
    if unlabelled:
        raise CorpusError(f"manifest {path} has {unlabelled} row(s) without a label (a labelling "
                          f"manifest to fill? pass it as --labels beside a corpus)")
    return [_labelled_video(path, row) for row in rows]


def _manifest_rows(path: str) -> list[dict]:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    fs, manifest_path = filesystem(path)
    # Every column as text: a label column a person filled with numbers stays a label.
    options = pa_csv.ConvertOptions(strings_can_be_null=False,
                                    column_types={"label": "string", "uri": "string",
                                                  "group": "string"})
    try:
        with fs.open(manifest_path, "rb") as handle:
            table = (pq.read_table(handle) if path.lower().endswith(".parquet")
                     else pa_csv.read_csv(handle, convert_options=options))
    except FileNotFoundError:
        raise CorpusError(f"manifest not found: {path}") from None
    except Exception as exc:
        raise CorpusError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None
    missing = {"uri", "label"} - set(table.column_names)
    if missing:
        raise CorpusError(f"manifest {path} lacks column(s): {', '.join(sorted(missing))}")
    return table.to_pylist()


def _labelled_video(path: str, row: dict) -> LabelledVideo:
    fs, manifest_path = filesystem(path)
    uri = str(row["uri"])
    if "://" not in uri and not uri.startswith("/"):
        uri = posixpath.join(fs.unstrip_protocol(posixpath.dirname(manifest_path)), uri)
    group = row.get("group")
    segment, window = _segment_of(path, row)
    return LabelledVideo(uri, str(row["label"]),
                         str(group) if group is not None else group_of(posixpath.basename(uri)),
                         str(row.get("etag") or ""), segment, window)


def _segment_of(path: str, row: dict) -> tuple[int | None, float | None]:
    """(segment, window length) of a row that names a segment; (None, None) for a whole video."""
    if row.get("segment") is None:
        return None, None
    try:
        segment, start, end = int(row["segment"]), float(row["start_s"]), float(row["end_s"])
        return segment, window_of_segment(segment, start, end)
    except (KeyError, TypeError, ValueError):
        raise CorpusError(f"manifest {path}: a row with a segment needs the segment's number, "
                          f"start_s and end_s, as its prediction row has them: "
                          f"{row.get('uri')}") from None
