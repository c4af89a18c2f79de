"""GNN encoders, registered by name in :mod:`molfed.models.registry` and built with :func:`build_encoder`.

Every encoder maps a batch of molecular graphs to embeddings of width ``hidden_channels``. Node-level encoders
(``graph_level = False``) return ``[num_nodes, hidden_channels]`` and are pooled by a readout; graph-level encoders
(AttentiveFP, whose attentive readout is part of the architecture) return ``[num_graphs, hidden_channels]``.

Normalization is LayerNorm, not BatchNorm: BatchNorm's running statistics are partner-specific under non-IID
federation and are incompatible with per-sample gradient clipping (DP-SGD).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINEConv
from torch_geometric.nn.models import AttentiveFP

from molfed.models.registry import encoder_class


class GINEEncoder(nn.Module):
    """Edge-aware GIN (Hu et al. 2020): node and bond features are embedded, then ``num_layers`` GINEConv blocks.

    Parameters
    ----------
    in_channels, edge_dim:
        Atom and bond feature widths.
    hidden_channels:
        Embedding width.
    num_layers:
        Message-passing layers; each is ``GINEConv -> LayerNorm -> ReLU -> dropout`` with a residual connection.
    """

    graph_level = False

    def __init__(self, in_channels: int, edge_dim: int, hidden_channels: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        self.atom_embedding = nn.Linear(in_channels, hidden_channels)
        self.bond_embeddings = nn.ModuleList(nn.Linear(edge_dim, hidden_channels) for _ in range(num_layers))
        self.convs = nn.ModuleList(
            GINEConv(
                nn.Sequential(
                    nn.Linear(hidden_channels, hidden_channels),
                    nn.ReLU(),
                    nn.Linear(hidden_channels, hidden_channels),
                ),
                train_eps=True,
            )
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_channels) for _ in range(num_layers))
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        h = self.atom_embedding(x)
        for conv, norm, bond in zip(self.convs, self.norms, self.bond_embeddings, strict=True):
            update = conv(h, edge_index, bond(edge_attr))
            update = nn.functional.dropout(norm(update).relu(), p=self.dropout, training=self.training)
            h = h + update
        return h


class AttentiveFPEncoder(nn.Module):
    """PyG's AttentiveFP (Xiong et al. 2020) with its attentive graph readout; returns graph embeddings."""

    graph_level = True

    def __init__(self, in_channels: int, edge_dim: int, hidden_channels: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        self.net = AttentiveFP(
            in_channels=in_channels,
            hidden_channels=hidden_channels,
            out_channels=hidden_channels,
            edge_dim=edge_dim,
            num_layers=num_layers,
            num_timesteps=2,
            dropout=dropout,
        )

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        return torch.relu(self.net(x, edge_index, edge_attr, batch))


def build_encoder(
    name: str, *, in_channels: int, edge_dim: int, hidden_channels: int, num_layers: int, dropout: float = 0.0
) -> nn.Module:
    """Instantiate a registered encoder.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the choices.
    """
    factory: Callable[..., nn.Module] = encoder_class(name)
    return factory(
        in_channels=in_channels,
        edge_dim=edge_dim,
        hidden_channels=hidden_channels,
        num_layers=num_layers,
        dropout=dropout,
    )
