"""Evaluation metrics and the champion/challenger gate, on hand-checkable inputs (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from pipeline.evaluation import evaluate
from pipeline.tracking import CHALLENGER, CHAMPION, apply_gate, decide_gate

CLASSES = ("A", "B", "C")


class FixedLogits(nn.Module):
    """Returns row i of `logits` for the i-th clip it is shown (clips carry their index)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def forward(self, clips):  # [B, 3, T, H, W], index encoded in the first pixel
        index = (clips[:, 0, 0, 0, 0] * 255).round().long()
        return self.logits[index]


def clips_for(count: int) -> np.ndarray:
    clips = np.zeros((count, 2, 4, 4, 3), np.uint8)
    clips[:, 0, 0, 0, 0] = np.arange(count)
    return clips


def test_metrics_match_a_hand_count():
    # true:      A  A  B  B  C  C
    # predicted: A  B  B  B  A  C   (second choice of clip 1 is A: top-2 would fix it)
    logits = [[3, 0, 0], [2, 3, 0], [0, 3, 0], [0, 3, 1], [3, 0, 2], [0, 0, 3]]
    labels = np.array([0, 0, 1, 1, 2, 2])
    result = evaluate(FixedLogits(logits), CLASSES, 2, clips_for(6), labels, batch_size=4)
    assert result.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result.clip_accuracy == pytest.approx(4 / 6)
    assert result.top5_accuracy == 1.0  # k = min(5, 3 classes)
    assert result.per_class["A"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert result.per_class["B"]["precision"] == pytest.approx(2 / 3)
    assert result.per_class["C"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert result.pair_accuracy("A", "B") == pytest.approx(3 / 4)  # A->A, A->B, B->B, B->B
    assert result.seconds_per_frame > 0 and result.clips_per_s > 0
    assert result.videos == 6 and result.video_accuracy == result.clip_accuracy


def test_video_level_accuracy_averages_the_clips_of_a_video():
    # Video v1 (label A): one clip says B weakly, one says A strongly -> the video is A.
    # Video v2 (label B): both clips say C -> wrong at both levels.
    logits = [[0, 0.2, 0], [4, 0, 0], [0, 0, 2], [0, 1, 2]]
    labels = np.array([0, 0, 1, 1])
    result = evaluate(FixedLogits(logits), CLASSES, 2, clips_for(4), labels,
                      video_ids=["v1", "v1", "v2", "v2"])
    assert result.clip_accuracy == pytest.approx(1 / 4)
    assert result.videos == 2 and result.video_accuracy == pytest.approx(1 / 2)


def test_gate_promotes_only_a_strictly_better_version(tmp_path):
    """The gate's decisions (decide_gate, on 40 gate clips with a 0.25 baseline) land as aliases
    in a real registry: a tie or an incomparable champion never moves `champion`."""
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    versions = [client.create_model_version("m", source=str(tmp_path / f"v{i}")).version
                for i in range(4)]

    def gate(version, new, champion_accuracy, champion, why=""):
        decision = decide_gate(40, new, 0.25, champion, champion_accuracy, why)
        apply_gate(uri, "m", version, decision)
        return decision

    first = gate(versions[0], 0.70, None, None)
    assert first.alias == CHAMPION
    better = gate(versions[1], 0.80, 0.70, versions[0])
    assert better.alias == CHAMPION
    tie = gate(versions[2], 0.80, 0.80, versions[1])
    assert tie.alias == CHALLENGER  # a tie keeps the incumbent
    incomparable = gate(versions[3], 0.99, None, versions[1], "other classes")
    assert incomparable.alias == CHALLENGER and "other classes" in incomparable.reason

    aliases = client.get_registered_model("m").aliases
    assert aliases[CHAMPION] == versions[1] and aliases[CHALLENGER] == versions[3]


@pytest.mark.parametrize("epochs", [1, 2, 3, 40])
def test_learning_curve_marks_the_kept_epoch_on_whole_epoch_ticks(epochs):
    from pipeline.evaluation import learning_curve_figure
    from pipeline.training import EpochStats

    history = [EpochStats(epoch, 1.0 / epoch, 0.5, 10.0, val_accuracy=0.5, val_loss=1.0)
               for epoch in range(1, epochs + 1)]
    kept = min(2, epochs)
    figure = learning_curve_figure(history, kept_epoch=kept)
    for axes in figure.axes:
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks  # 1.5 was a tick
        marks = [line for line in axes.get_lines() if line.get_label() == f"kept (epoch {kept})"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [kept, kept]
        assert [line.get_label() for line in axes.get_legend().get_lines()][-1] == f"kept (epoch {kept})"
