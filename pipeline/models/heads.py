"""Temporal heads: sequence [B, T', F] -> logits [B, num_classes].

`none` averages the sequence over time (order-blind: it cannot tell a clip from its reverse);
the recurrent heads run one or two stacked GRU/LSTM layers and classify their final state.
Each head's `embed` is the clip representation its dense classifier reads (the time average, or
the last layer's final hidden state), `embedding_size` floats: the rows' `embedding`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import HEADS

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class MeanPoolHead(nn.Module):
    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(features, num_classes)

    @property
    def embedding_size(self) -> int:
        return self.classifier.in_features

    def embed(self, sequence: torch.Tensor) -> torch.Tensor:
        return sequence.mean(dim=1)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(sequence))


class RecurrentHead(nn.Module):
    """Stacked recurrent layers; the last one's final hidden state feeds a dense classifier.

    Recurrent weights start as the paper's Keras defaults would (Glorot-uniform input weights,
    orthogonal recurrent weights, zero biases, LSTM forget bias 1), not PyTorch's uniform
    +-1/sqrt(units): with 4,096 input features PyTorch's range drives the gates into saturation.
    """

    def __init__(self, features: int, num_classes: int, layers: tuple[tuple[str, int], ...]):
        super().__init__()
        self.rnns = nn.ModuleList()
        size = features
        for cell, units in layers:
            rnn = _CELLS[cell](size, units, batch_first=True)
            _keras_init(rnn, gates=3 if cell == "gru" else 4)
            self.rnns.append(rnn)
            size = units
        self.classifier = nn.Linear(size, num_classes)

    @property
    def embedding_size(self) -> int:
        return self.classifier.in_features

    def embed(self, sequence: torch.Tensor) -> torch.Tensor:
        x = sequence
        for rnn in self.rnns:
            x, _ = rnn(x)
        return x[:, -1]

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(sequence))


def _keras_init(rnn: nn.RNNBase, gates: int) -> None:
    with torch.no_grad():
        for name, weight in rnn.named_parameters():
            if name.startswith("weight_ih"):
                for block in weight.chunk(gates):
                    nn.init.xavier_uniform_(block)
            elif name.startswith("weight_hh"):
                for block in weight.chunk(gates):
                    nn.init.orthogonal_(block)
            else:
                nn.init.zeros_(weight)
                if gates == 4 and name.startswith("bias_ih"):
                    weight.chunk(4)[1].fill_(1.0)  # PyTorch's LSTM gate order: input, forget, cell, output


def build_head(name: str, features: int, num_classes: int) -> nn.Module:
    layers = HEADS[name]
    if not layers:
        return MeanPoolHead(features, num_classes)
    return RecurrentHead(features, num_classes, layers)
