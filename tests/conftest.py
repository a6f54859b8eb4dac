"""Shared fixtures: generated videos and corpora (session-scoped, made once per run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from videos import write_bad_inputs  # noqa: E402

from pipeline.synthetic import make_corpus  # noqa: E402


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="session")
def motion_corpus(tmp_path_factory) -> Path:
    """A small four-class motion corpus (MoveLeft/Right/Up/Down), 4 groups per class."""
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(str(root), per_class=12, groups=4, seed=11)
    return root
