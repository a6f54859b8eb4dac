"""devices.all_reduce across two gloo ranks on the CPU. Not marked `gpu`: it runs wherever this
suite does, so a one-GPU machine (where NCCL cannot form a group of two) still checks that the
reduction really combines the ranks' values."""

from __future__ import annotations

import checks


def test_gloo_all_reduce_across_two_ranks():
    checks.all_reduce_across_two_ranks("gloo")
