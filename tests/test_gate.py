"""The champion gate's decision and the clips it may compare on, without MLflow or Ray: pure
functions over accuracies, labels and video digests (tests/test_training.py runs the gate on a
real MLflow store)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.corpus import LabelledVideo
from pipeline.train_job import GateClips, split_selection_and_gate
from pipeline.tracking import (CHALLENGER, CHAMPION, baseline_accuracy, baseline_margin,
                               decide_gate)


def test_baselines_are_chance_or_the_most_frequent_class_whichever_is_higher():
    assert baseline_accuracy(np.array([0, 1, 2, 3] * 3), 4) == pytest.approx(0.25)
    assert baseline_accuracy(np.array([0] * 9 + [1, 2, 3]), 4) == pytest.approx(0.75)
    assert baseline_accuracy(np.array([1, 1]), 10) == pytest.approx(1.0)
    assert baseline_margin(0.25, 12) == pytest.approx(0.125)  # sqrt(0.25 * 0.75 / 12)


def test_a_chance_level_model_never_becomes_the_first_champion():
    # The README tour's old case: 0.25 on 4 balanced classes, no champion yet.
    decision = decide_gate(12, 0.25, 0.25, None, None)
    assert decision.alias == CHALLENGER and "no better than chance" in decision.reason
    # Better than chance, but within one standard error of it (5/12 would clear 0.375).
    assert decide_gate(12, 4 / 12, 0.25, None, None).alias == CHALLENGER
    assert decide_gate(12, 0.375, 0.25, None, None).alias == CHALLENGER  # not strictly above
    first = decide_gate(12, 5 / 12, 0.25, None, None)
    assert first.alias == CHAMPION and first.reason.startswith("no champion yet")
    # Always answering the most frequent class is a baseline too: 0.75 of the clips here.
    assert decide_gate(12, 0.8, 0.75, None, None).alias == CHALLENGER


def test_without_clean_gate_clips_nothing_is_promoted_and_the_reason_says_why():
    why = "all 12 gate clips are in champion v1's training videos"
    decision = decide_gate(0, None, None, "1", None, why)
    assert decision.alias == CHALLENGER and why in decision.reason
    assert decision.reason.startswith("not promoted: no gate clips")
    assert decide_gate(0, None, None, None, None, "one recording group").alias == CHALLENGER


def test_a_better_model_on_disjoint_gate_clips_takes_the_champion_and_a_tie_does_not():
    win = decide_gate(12, 0.75, 0.25, "1", 0.5)
    assert (win.alias, win.champion_version, win.gate_clips) == (CHAMPION, "1", 12)
    assert "beats champion v1 on 12 gate clips" in win.reason
    assert decide_gate(12, 0.5, 0.25, "1", 0.5).alias == CHALLENGER  # a tie keeps the incumbent
    assert decide_gate(12, 0.75, 0.25, "1", 0.9).alias == CHALLENGER
    incomparable = decide_gate(12, 0.9, 0.25, "1", None, "champion v1 has other classes")
    assert incomparable.alias == CHALLENGER and "other classes" in incomparable.reason
    # Beating a weak champion is not enough: the baselines come first.
    assert decide_gate(12, 0.3, 0.25, "1", 0.2).alias == CHALLENGER


def _videos(groups: int, per_group: int = 3) -> list[LabelledVideo]:
    return [LabelledVideo(f"c/A/v_A_g{g:02d}_c{c:02d}.mp4", "A", f"g{g:02d}", "etag")
            for g in range(1, groups + 1) for c in range(per_group)]


def test_the_gate_gets_whole_recording_groups_of_the_validation_data():
    selection, gate, why = split_selection_and_gate(_videos(4), seed=0)
    assert why == "" and len(selection) == len(gate) == 6
    assert not {v.group for v in selection} & {v.group for v in gate}
    selection, gate, why = split_selection_and_gate(_videos(1), seed=0)
    assert len(selection) == 3 and gate == [] and "1 recording group" in why


def test_gate_clips_a_model_trained_on_are_left_out():
    gate = GateClips(np.zeros((3, 2, 4, 4, 3), np.uint8), np.array([0, 1, 2]),
                     ["a", "b", "c"], ["da", "db", "dc"])
    kept = gate.without({"db"}, "champion v1")
    assert kept.uris == ["a", "c"] and list(kept.labels) == [0, 2] and len(kept.clips) == 2
    none = gate.without({"da", "db", "dc", "other"}, "champion v1")
    assert len(none) == 0 and none.why_none == "all 3 gate clips are in champion v1's training videos"
