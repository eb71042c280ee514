"""The GNN every run trains: 2-layer GraphSAGE with mean aggregation (as in DistDGL's example)."""

from __future__ import annotations

import itertools

import torch
from dgl.nn import SAGEConv
from torch import nn


class GraphSAGE(nn.Module):
    """``len(fanouts)`` SAGEConv layers over sampled blocks."""

    def __init__(
        self, in_dim: int, hidden: int, num_classes: int, num_layers: int = 2, dropout: float = 0.5
    ):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [num_classes]
        self.layers = nn.ModuleList(SAGEConv(a, b, "mean") for a, b in itertools.pairwise(dims))
        self.dropout = nn.Dropout(dropout)

    def forward(self, blocks, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks, strict=True)):
            h = layer(block, h)
            if i < len(self.layers) - 1:
                h = self.dropout(torch.relu(h))
        return h
