"""tests/gpu: checks that need CUDA and nothing beyond torch, numpy and this package.

Run with `make test-gpu` (pytest --confcutdir keeps tests/conftest.py, which needs Ray, ffmpeg and
S3 fixtures, out of it). Without CUDA every test marked `gpu` is skipped, saying so; the
gloo check (test_all_reduce.py) runs on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the package, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
