"""Membership-inference check: a loss-threshold attack (Yeom et al. 2018) on a trained model.

The attacker guesses "member" when a molecule's loss is low. Its ROC-AUC over members (training molecules) vs
non-members (held-out molecules) measures what the model reveals about who was in the training set: 0.5 means
nothing learnable. With scaffold splits, non-members are also *structurally* further from the training set, so a
model that generalizes imperfectly scores a little above 0.5 even without memorizing: compare settings, not the
absolute value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfed.models.model import MoleculeModel
from molfed.privacy.dpsgd import per_graph_losses


@torch.no_grad()
def sample_losses(model: MoleculeModel, graphs: Sequence[Data], *, batch_size: int = 256) -> np.ndarray:
    """Each graph's loss (standardized units, eval mode), ``[len(graphs)]``."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        pred = model.forward_batch(batch)
        out.append(per_graph_losses(pred, model.scale_targets(batch.y), model.is_classification).cpu().numpy())
    return np.concatenate(out) if out else np.empty(0)


def loss_threshold_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """ROC-AUC of the score ``-loss`` for telling members from non-members (NaN if either set is empty)."""
    if len(member_losses) == 0 or len(nonmember_losses) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(member_losses)), np.zeros(len(nonmember_losses))]
    return float(roc_auc_score(labels, -np.r_[member_losses, nonmember_losses]))
