"""Validation as sums, so that it can travel through secure aggregation with the update it comes with.

Under secure aggregation a partner does not report its validation metrics of the incoming global model; it adds
four small vectors to the update it holds for the masked sum: per task, the sum of squared errors (regression,
original units) and of binary cross-entropy (classification), and the number of labels of each kind — divided by
the update's sample count, because the masked sum weights every vector by it. The coordinator unmasks only the
federation's totals, strips them from the aggregate (:func:`take`), and reads the validation value off them
(:func:`metrics`): RMSE over the union of the partners' validation splits, log-loss over the union. Model selection
across rounds therefore works under secure aggregation without one partner's validation value reaching anyone.

ROC-AUC is not a sum; a classification-only federation under secure aggregation selects its round on log-loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from molfed.federated import partner as p
from molfed.federated.types import Update, Weights
from molfed.models.model import ModelSpec
from molfed.train.metrics import bce

__all__ = ["KEYS", "PREFIX", "embed", "metrics", "partner_sums", "selection_metric", "take", "template"]

PREFIX = "val_sums."
"""Names of the summed vectors inside an update (never a model tensor's name: those have no such prefix)."""
KEYS = ("sse", "n_regression", "bce", "n_classification")


def partner_sums(
    data: p.PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Per task (``[n_tasks]`` float64 each): squared errors and BCE summed over the partner's validation split,
    and the number of labels they cover. Shared tasks only (private heads are not evaluated here)."""
    n = len(spec.task_names) - spec.n_private_tasks
    out = {key: np.zeros(n, dtype=np.float64) for key in KEYS}
    if not data.splits["val"] or n == 0:
        return out
    y_true, y_pred = p.predict_split(data, spec=spec, weights=weights, scaling=scaling, split="val", device=device)
    for j, kind in enumerate(spec.task_types[:n]):
        mask = ~np.isnan(y_true[:, j])
        t, q = y_true[mask, j].astype(np.float64), y_pred[mask, j].astype(np.float64)
        if kind == "regression":
            out["sse"][j], out["n_regression"][j] = float(np.sum((q - t) ** 2)), float(t.size)
        else:
            out["bce"][j], out["n_classification"][j] = float(np.sum(bce(t, q))), float(t.size)
    return out


def embed(update: Update, sums: Mapping[str, np.ndarray]) -> Update:
    """``update`` with ``sums`` added as tensors ``val_sums.<key>``, divided by its sample count (the masked sum
    multiplies every tensor by it)."""
    n = update.n_samples
    extra = {f"{PREFIX}{k}": (np.asarray(sums[k], dtype=np.float64) / n).astype(np.float32) for k in KEYS}
    return dataclasses.replace(update, weights={**update.weights, **extra})


def template(n_tasks: int) -> Weights:
    """Zero tensors of the summed vectors' layout (the coordinator's template for the masked sum)."""
    return {f"{PREFIX}{k}": np.zeros(n_tasks, dtype=np.float32) for k in KEYS}


def take(mean: Weights, n_samples: int) -> tuple[Weights, dict[str, np.ndarray] | None]:
    """Split an unmasked sample-weighted mean into model weights and the federation's validation totals
    (None when the round carried none)."""
    found = {k: v for k, v in mean.items() if k.startswith(PREFIX)}
    if not found:
        return dict(mean), None
    weights = {k: v for k, v in mean.items() if not k.startswith(PREFIX)}
    totals = {k.removeprefix(PREFIX): np.asarray(v, dtype=np.float64) * n_samples for k, v in found.items()}
    return weights, totals


def metrics(totals: Mapping[str, np.ndarray], task_names: Sequence[str], task_types: Sequence[str]) -> dict[str, float]:
    """Validation metrics of the union of the partners' validation splits from the totals: ``rmse.<task>`` and
    ``logloss.<task>``, and their means over tasks ``rmse`` and ``logloss`` (as :func:`~molfed.train.metrics.
    task_metrics` averages per-task metrics). A task without labels anywhere is left out."""
    out: dict[str, float] = {}
    per_name: dict[str, list[float]] = {}
    for j, (task, kind) in enumerate(zip(task_names, task_types, strict=False)):
        if kind == "regression" and totals["n_regression"][j] >= 0.5:
            name, value = "rmse", float(np.sqrt(max(totals["sse"][j], 0.0) / round(totals["n_regression"][j])))
        elif kind == "classification" and totals["n_classification"][j] >= 0.5:
            name, value = "logloss", float(max(totals["bce"][j], 0.0) / round(totals["n_classification"][j]))
        else:
            continue
        out[f"{name}.{task}"] = value
        per_name.setdefault(name, []).append(value)
    out.update({name: float(np.mean(values)) for name, values in per_name.items()})
    return out


def selection_metric(metric: str) -> str:
    """The metric a run selects its round on under secure aggregation: ``metric`` where it is a sum (RMSE), else
    log-loss (ROC-AUC does not decompose into sums)."""
    return metric if metric == "rmse" else "logloss"
