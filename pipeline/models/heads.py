"""Temporal heads: sequence [B, T', F] -> logits [B, num_classes].

`none` averages the sequence over time (order-blind: it cannot tell a clip from its reverse);
the recurrent heads run one or two stacked GRU/LSTM layers and classify their final state.
"""

from __future__ import annotations

import torch
from torch import nn

# head name -> recurrent layers in order, as (cell, units); the paper's table names them this way.
HEADS: dict[str, tuple[tuple[str, int], ...]] = {
    "none": (),
    "gru32": (("gru", 32),),
    "gru128": (("gru", 128),),
    "lstm32": (("lstm", 32),),
    "lstm128": (("lstm", 128),),
    "lstm32_gru32": (("lstm", 32), ("gru", 32)),
    "gru32_lstm32": (("gru", 32), ("lstm", 32)),
    "lstm128_gru128": (("lstm", 128), ("gru", 128)),
    "gru128_lstm128": (("gru", 128), ("lstm", 128)),
}

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class MeanPoolHead(nn.Module):
    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.classifier(sequence.mean(dim=1))


class RecurrentHead(nn.Module):
    """Stacked recurrent layers; the last one's final hidden state feeds a dense classifier."""

    def __init__(self, features: int, num_classes: int, layers: tuple[tuple[str, int], ...]):
        super().__init__()
        self.rnns = nn.ModuleList()
        size = features
        for cell, units in layers:
            self.rnns.append(_CELLS[cell](size, units, batch_first=True))
            size = units
        self.classifier = nn.Linear(size, num_classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        x = sequence
        for rnn in self.rnns:
            x, _ = rnn(x)
        return self.classifier(x[:, -1])


def build_head(name: str, features: int, num_classes: int) -> nn.Module:
    layers = HEADS[name]
    if not layers:
        return MeanPoolHead(features, num_classes)
    return RecurrentHead(features, num_classes, layers)
