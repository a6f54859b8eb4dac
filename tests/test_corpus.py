"""Labelled corpora: the UCF50 layout, manifests, the group-aware split, the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.corpus import CorpusError, LabelledVideo, read_corpus, split_by_group
from pipeline.frames import decode_frames, sample_clip
from pipeline.synthetic import make_corpus


def test_ucf50_layout_is_read_with_sorted_classes_and_groups(motion_corpus: Path):
    corpus = read_corpus(str(motion_corpus))
    assert corpus.class_names == ("MoveDown", "MoveLeft", "MoveRight", "MoveUp")
    assert len(corpus.videos) == 48
    assert {v.group for v in corpus.videos} == {"g01", "g02", "g03", "g04"}
    first = corpus.videos[0]
    assert first.uri.startswith("file://") and f"/{first.label}/v_{first.label}_" in first.uri


def test_manifest_csv_with_relative_uris(motion_corpus: Path, tmp_path: Path):
    corpus = read_corpus(str(motion_corpus))
    manifest = tmp_path / "manifest.csv"
    lines = ["uri,label,group"] + [f"{v.uri},{v.label},{v.group}" for v in corpus.videos[:6]]
    manifest.write_text("\n".join(lines) + "\n")
    from_manifest = read_corpus(str(manifest))
    assert [v.uri for v in from_manifest.videos] == [v.uri for v in corpus.videos[:6]]
    (tmp_path / "clips").mkdir()
    name = Path(corpus.videos[0].uri.removeprefix("file://"))
    (tmp_path / "clips" / name.name).write_bytes(name.read_bytes())
    relative = tmp_path / "relative.csv"
    relative.write_text(f"uri,label\nclips/{name.name},Thing\n")
    video = read_corpus(str(relative)).videos[0]
    assert video.label == "Thing" and video.group == corpus.videos[0].group
    assert sample_clip(video.uri).shape == (20, 64, 64, 3)


def test_bad_corpora_give_clear_errors(tmp_path: Path):
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(str(tmp_path / "nowhere"))
    (tmp_path / "bad.csv").write_text("path,name\nx,y\n")
    with pytest.raises(CorpusError, match="lacks column"):
        read_corpus(str(tmp_path / "bad.csv"))


def test_group_split_never_leaks_and_is_deterministic():
    videos = [LabelledVideo(f"v{c}{g}{i}", f"C{c}", f"g{g:02d}")
              for c in range(5) for g in range(1, 26) for i in range(3)]
    for seed in range(20):
        train, val = split_by_group(videos, 0.2, seed)
        assert {v.group for v in train}.isdisjoint({v.group for v in val})
        assert len(train) + len(val) == len(videos) and val and train
        assert split_by_group(videos, 0.2, seed) == (train, val)
    assert len({v.group for v in split_by_group(videos, 0.2, 0)[1]}) == 5
    with pytest.raises(CorpusError):
        split_by_group(videos[:3], 0.2, 0)  # one group cannot be split


def _horizontal_shift(a: np.ndarray, b: np.ndarray) -> int:
    """The horizontal displacement from frame a to frame b (phase correlation, wrap-around)."""
    cross = np.fft.fft2(a - a.mean()).conj() * np.fft.fft2(b - b.mean())
    corr = np.real(np.fft.ifft2(cross / (np.abs(cross) + 1e-9)))
    dx = np.unravel_index(corr.argmax(), corr.shape)[1]
    return int((dx + a.shape[1] // 2) % a.shape[1] - a.shape[1] // 2)


def test_synthetic_classes_differ_by_motion_not_by_appearance(tmp_path: Path):
    uris = make_corpus(str(tmp_path), classes=("MoveLeft", "MoveRight"), per_class=16, groups=4,
                       seed=5)
    stats = {"MoveLeft": [], "MoveRight": []}
    shifts = {"MoveLeft": [], "MoveRight": []}
    for uri in uris:
        label = uri.split("/")[-2]
        _, frames = decode_frames(uri, size=(64, 64))
        gray = frames.astype(np.float32).mean(axis=-1)
        first = gray[0]
        # Appearance of the first frame: brightness, contrast, and gradient energy along each axis.
        stats[label].append([first.mean(), first.std(), np.abs(np.diff(first, axis=1)).mean(),
                             np.abs(np.diff(first, axis=0)).mean()])
        shifts[label].append(_horizontal_shift(gray[0], gray[10]))
    left, right = np.array(stats["MoveLeft"]), np.array(stats["MoveRight"])
    pooled_std = np.sqrt((left.var(axis=0) + right.var(axis=0)) / 2)
    effect = np.abs(left.mean(axis=0) - right.mean(axis=0)) / pooled_std
    assert (effect < 0.8).all(), f"first frames differ by class: effect sizes {effect}"
    # ... while the motion between frames separates the classes perfectly.
    assert all(s < 0 for s in shifts["MoveLeft"]) and all(s > 0 for s in shifts["MoveRight"])


def test_synthetic_corpus_layout_and_determinism(tmp_path: Path):
    a = make_corpus(str(tmp_path / "a"), classes=("ZoomIn", "Static"), per_class=3, groups=2, seed=1)
    b = make_corpus(str(tmp_path / "b"), classes=("ZoomIn", "Static"), per_class=3, groups=2, seed=1)
    names = [u.split("/", 3)[-1].split("/", 1)[-1] for u in a]
    assert [Path(u).name for u in a] == ["v_ZoomIn_g01_c01.mp4", "v_ZoomIn_g02_c01.mp4",
                                         "v_ZoomIn_g01_c02.mp4", "v_Static_g01_c01.mp4",
                                         "v_Static_g02_c01.mp4", "v_Static_g01_c02.mp4"], names
    assert all(Path(x.removeprefix("file://")).read_bytes() == Path(y.removeprefix("file://")).read_bytes()
               for x, y in zip(a, b))
