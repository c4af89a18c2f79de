"""Local training and evaluation on one partner's graphs. Deterministic for a given seed.

Data order comes from a seeded generator, not the global RNG, so partners training concurrently in threads stay
reproducible. (Dropout draws from the global RNG: with ``dropout > 0`` and concurrent partners, runs are not
bitwise reproducible.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfed.models.model import MoleculeModel
from molfed.privacy.dpsgd import DPSGDSettings, train_dp
from molfed.train.metrics import masked_loss, task_metrics

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


@dataclass(frozen=True, slots=True)
class TrainResult:
    n_samples: int
    """Training molecules."""
    loss: float
    """Mean masked loss over the last local epoch (standardized units)."""
    steps: int
    """Optimizer steps taken."""


def train_local(
    model: MoleculeModel,
    graphs: Sequence[Data],
    *,
    epochs: int,
    batch_size: int,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    proximal_mu: float = 0.0,
    grad_correction: Mapping[str, torch.Tensor] | None = None,
    dp: DPSGDSettings | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``epochs`` passes over ``graphs``.

    Parameters
    ----------
    proximal_mu:
        FedProx term ``mu/2 * ||w - w_start||^2`` against the weights the model had on entry (0 disables it).
        It shapes the gradients only: the reported ``loss`` is the data loss without it.
    grad_correction:
        Tensors by parameter name (same shapes) added to those parameters' gradients before every optimizer step:
        SCAFFOLD's ``c - c_i``. Parameters not named are not corrected.
    dp:
        Sample-level DP-SGD (see :mod:`molfed.privacy.dpsgd`): Poisson sampling with rate ``batch_size / n``,
        per-graph clipping and Gaussian noise instead of shuffled mini-batches.

    Raises
    ------
    ValueError
        If ``graphs`` is empty, the optimizer is unknown, or ``dp`` is combined with ``grad_correction``.
    """
    if not graphs:
        raise ValueError("train_local: got 0 training graphs, expected at least 1")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {sorted(_OPTIMIZERS)}")
    device = next(model.parameters()).device
    opt = _OPTIMIZERS[optimizer](model.parameters(), lr=lr, weight_decay=weight_decay)
    if dp is not None:
        if grad_correction is not None:
            raise ValueError("train_local: DP-SGD cannot apply a gradient correction computed without noise")
        dp_loss, dp_steps = train_dp(
            model,
            graphs,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=opt,
            settings=dp,
            seed=seed,
            proximal_mu=proximal_mu,
        )
        return TrainResult(n_samples=len(graphs), loss=dp_loss, steps=dp_steps)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    corrections = [
        (param, grad_correction[name].to(device=param.device, dtype=param.dtype))
        for name, param in model.named_parameters()
        if grad_correction is not None and name in grad_correction
    ]
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(list(graphs), batch_size=batch_size, shuffle=True, generator=generator)
    model.train()
    steps, epoch_loss = 0, 0.0
    for _ in range(epochs):
        total, count = 0.0, 0
        for batch in loader:
            batch = batch.to(device)
            out = model.forward_batch(batch)
            data_loss = masked_loss(out, model.scale_targets(batch.y), model.is_classification)
            loss = data_loss
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                loss = loss + 0.5 * proximal_mu * prox
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for param, correction in corrections:
                if param.grad is not None:
                    param.grad.add_(correction)
            opt.step()
            steps += 1
            total += float(data_loss.detach()) * batch.num_graphs
            count += batch.num_graphs
        epoch_loss = total / max(count, 1)
    return TrainResult(n_samples=len(graphs), loss=epoch_loss, steps=steps)


def full_gradient(model: MoleculeModel, graphs: Sequence[Data], *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Gradient of the mean masked loss over all ``graphs`` at the model's current weights, by parameter name
    (float32, parameter shapes), in eval mode (no dropout); the weights are not changed. Batches are weighted by
    their size.

    Raises
    ------
    ValueError
        If ``graphs`` is empty.
    """
    if not graphs:
        raise ValueError("full_gradient: got 0 graphs, expected at least 1")
    device = next(model.parameters()).device
    model.eval()
    model.zero_grad(set_to_none=True)
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        loss = masked_loss(model.forward_batch(batch), model.scale_targets(batch.y), model.is_classification)
        (loss * (batch.num_graphs / len(graphs))).backward()
    grads = {
        name: (p.grad.detach().cpu().numpy() if p.grad is not None else np.zeros(tuple(p.shape))).astype(np.float32)
        for name, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return grads


@torch.no_grad()
def _raw_outputs(model: MoleculeModel, graphs: Sequence[Data], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    model.eval()
    trues, outs = [], []
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        outs.append(model.forward_batch(batch).cpu())
        trues.append(batch.y.cpu())
    n_tasks = len(model.spec.task_names)
    if not outs:
        return torch.empty(0, n_tasks), torch.empty(0, n_tasks)
    return torch.cat(trues), torch.cat(outs)


def predict_graphs(
    model: MoleculeModel, graphs: Sequence[Data], *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(y_true, y_pred)``, each ``[n, n_tasks]``, predictions in original units / probabilities."""
    y_true, out = _raw_outputs(model, graphs, batch_size)
    return y_true.numpy(), model.to_predictions(out.to(model.target_mean.device)).cpu().numpy()


def evaluate(model: MoleculeModel, graphs: Sequence[Data], *, batch_size: int = 256) -> dict[str, float]:
    """Masked loss (standardized units, key ``loss``) plus :func:`task_metrics` on ``graphs``; {} if empty."""
    y_true, out = _raw_outputs(model, graphs, batch_size)
    if len(y_true) == 0:
        return {}
    out = out.to(model.target_mean.device)
    y_pred = model.to_predictions(out).cpu().numpy()
    metrics = task_metrics(y_true.numpy(), y_pred, model.spec.task_types, model.spec.task_names)
    scaled = model.scale_targets(y_true.to(out.device))
    metrics["loss"] = float(masked_loss(out, scaled, model.is_classification))
    return metrics


def label_moments(graphs: Sequence[Data]) -> Mapping[str, list[float]]:
    """Per-task count, sum and sum of squares of labels: aggregate statistics a partner may share."""
    if not graphs:
        return {"count": [], "sum": [], "sumsq": []}
    y = torch.cat([g.y for g in graphs]).double()
    mask = ~torch.isnan(y)
    y0 = torch.nan_to_num(y)
    return {
        "count": mask.sum(0).tolist(),
        "sum": (y0 * mask).sum(0).tolist(),
        "sumsq": (y0**2 * mask).sum(0).tolist(),
    }
