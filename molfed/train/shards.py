"""Training from on-disk shards (:mod:`molfed.data.shards`): one optimizer over all shards, one shard's graphs in
memory at a time (shard order and the order within a shard are shuffled each epoch with a seeded generator)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from molfed.data.shards import load_shard
from molfed.models.model import MoleculeModel
from molfed.train.metrics import masked_loss


def train_from_shards(
    model: MoleculeModel,
    shards: Sequence[Path],
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Train ``model`` in place with Adam over every shard, one shard in memory at a time.

    Returns
    -------
    float
        Mean masked loss over the last epoch (standardized units).
    """
    if not shards:
        raise ValueError("train_from_shards: got 0 shards, expected at least 1")
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        total, count = 0.0, 0
        for i in torch.randperm(len(shards), generator=generator).tolist():
            loader = DataLoader(list(load_shard(shards[i])), batch_size=batch_size, shuffle=True, generator=generator)
            for batch in loader:
                batch = batch.to(device)
                loss = masked_loss(model.forward_batch(batch), model.scale_targets(batch.y), model.is_classification)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * batch.num_graphs
                count += batch.num_graphs
    return total / max(count, 1)
