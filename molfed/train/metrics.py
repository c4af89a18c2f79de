"""Masked losses and evaluation metrics for multi-task regression / binary classification.

Missing labels are NaN in ``y`` and are masked out of every loss and metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor

REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("roc_auc", "pr_auc")


def masked_loss(out: Tensor, y: Tensor, is_classification: Tensor) -> Tensor:
    """Mean of MSE (regression columns) and BCE-with-logits (classification columns) over labelled entries.

    Parameters
    ----------
    out, y:
        ``[num_graphs, n_tasks]``; ``y`` holds NaN where a label is missing (regression ``y`` already scaled).
    is_classification:
        ``[n_tasks]`` bool.
    """
    mask = ~torch.isnan(y)
    target = torch.nan_to_num(y)
    mse = (out - target) ** 2
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
    loss = torch.where(is_classification, bce, mse)
    n = mask.sum()
    return (loss * mask).sum() / n.clamp_min(1)


def task_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, task_types: Sequence[str], task_names: Sequence[str]
) -> dict[str, float]:
    """Metrics per task (``rmse.<task>`` ...) and their mean over tasks (``rmse`` ...).

    Parameters
    ----------
    y_true, y_pred:
        ``[n, n_tasks]`` in original units (regression) or 0/1 labels and probabilities (classification).
        NaN in ``y_true`` marks a missing label.

    A metric that is undefined (e.g. ROC-AUC with one class present, or fewer than 2 labels) is omitted.
    """
    per_name: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    for j, (kind, task) in enumerate(zip(task_types, task_names, strict=True)):
        mask = ~np.isnan(y_true[:, j])
        t, p = y_true[mask, j].astype(np.float64), y_pred[mask, j].astype(np.float64)
        values = _regression(t, p) if kind == "regression" else _classification(t, p)
        for name, value in values.items():
            out[f"{name}.{task}"] = value
            per_name.setdefault(name, []).append(value)
    for name, per_task in per_name.items():
        out[name] = float(np.mean(per_task))
    return out


def _regression(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if t.size == 0:
        return {}
    err = p - t
    values = {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if t.size >= 2 and ss_tot > 0:
        values["r2"] = 1.0 - float(np.sum(err**2)) / ss_tot
    return values


def _classification(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if t.size < 2 or len(np.unique(t)) < 2:
        return {}
    return {"roc_auc": float(roc_auc_score(t, p)), "pr_auc": float(average_precision_score(t, p))}


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` (e.g. ``rmse`` or ``roc_auc.task``) are better."""
    return metric.split(".", 1)[0] in ("r2", "roc_auc", "pr_auc")
