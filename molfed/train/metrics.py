"""Masked losses and evaluation metrics for multi-task regression / binary classification.

Missing labels are NaN in ``y`` and are masked out of every loss and metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("roc_auc", "pr_auc", "logloss")
PROBABILITY_FLOOR = 1e-7
"""Probabilities are clipped to ``[floor, 1 - floor]`` for log-loss (one confident mistake stays finite)."""


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
    if t.size == 0:
        return {}
    out = {"logloss": float(np.mean(bce(t, p)))}  # defined with one class too; a sum over molecules (val_sums)
    if t.size >= 2 and len(np.unique(t)) >= 2:
        out.update({"roc_auc": roc_auc(t, p), "pr_auc": average_precision(t, p)})
    return out


def bce(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of probabilities ``p`` for 0/1 labels ``t``, per molecule (natural log)."""
    q = np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    return -(t * np.log(q) + (1.0 - t) * np.log(1.0 - q))


def roc_auc(t: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve of scores ``p`` for 0/1 labels ``t`` (Mann-Whitney U; tied scores count half).

    Computed here rather than with scikit-learn, whose import costs seconds in every partner job.
    """
    ranks = _average_ranks(p)
    pos = t == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(t: np.ndarray, p: np.ndarray) -> float:
    """Average precision: sum over distinct score thresholds of (recall step) x precision, as scikit-learn."""
    order = np.argsort(-p, kind="mergesort")
    scores, hits = p[order], (t[order] == 1).astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each distinct score
    tp = np.cumsum(hits)[last]
    precision, recall = tp / (last + 1), tp / hits.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` (e.g. ``rmse`` or ``roc_auc.task``) are better."""
    return metric.split(".", 1)[0] in ("r2", "roc_auc", "pr_auc")
