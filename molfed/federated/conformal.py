"""Federated split-conformal prediction, temperature scaling and the applicability domain: the pure math.

Partners summarize their calibration split as fixed-bin histograms of nonconformity scores (counts only) and sums of
losses over a fixed temperature grid; the coordinator adds them (in the clear, or as a secure sum) and reads
quantiles off the summed histogram. Because every partner bins on the same edges, the summed histogram is the
histogram of the pooled calibration scores, so the federated quantile equals the pooled split-conformal quantile up
to one bin (it is rounded *up* to the bin's upper edge: conservative). With ``n`` pooled calibration scores the
quantile at level ``1 - alpha`` is the ``ceil((n + 1)(1 - alpha))``-th smallest score (the finite-sample correction
of split conformal prediction; Lu et al. 2023, Humbert et al. 2023); when that exceeds ``n`` the interval is
unbounded (None here).

Scores:

* regression: ``|y - y_hat| / std`` (standardized by the federation's target scaling); half-width = ``q * std``;
* classification (per class, class-conditional): ``-z`` for label 1 and ``z`` for label 0, ``z`` the raw logit. A
  class is in the set when its score is at most its class's quantile. Temperature scaling is monotone in ``z``, so the
  sets do not depend on the temperature;
* applicability domain: ``sqrt(m / d)``, ``m`` the Mahalanobis distance squared of the graph embedding to the
  federation's training embeddings (mean and covariance from summed moments), ``d`` the embedding width (about 1 for
  a typical training molecule).

Everything here is numpy on arrays; no torch, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESIDUAL_EDGES = np.linspace(0.0, 10.0, 2001)
"""Bin edges of standardized absolute residuals (0.005 std per bin); a last bin holds everything >= 10."""
LOGIT_EDGES = np.linspace(-20.0, 20.0, 4001)
"""Bin edges of class-conditional logit scores (0.01 per bin); below -20 counts in the first bin, >= 20 in the last."""
DOMAIN_EDGES = np.linspace(0.0, 20.0, 2001)
"""Bin edges of domain scores (0.01 per bin); >= 20 in the last bin."""
TEMPERATURES = np.geomspace(0.25, 8.0, 41)
"""The temperature grid partners evaluate their calibration NLL on (ratio ~1.09 between neighbours)."""
RIDGE = 1e-3
"""Covariance shrinkage: ``RIDGE * mean variance`` is added to the diagonal before inverting."""

Sums = dict[str, np.ndarray]
"""Named float64 arrays a partner reports; the federation adds them element-wise (histogram counts, loss sums)."""


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in ``len(edges)`` bins: ``[e_i, e_{i+1})`` for each edge pair, then ``>= e_last``.

    Values below ``e_0`` count in the first bin. NaN values are ignored. Returns float64 (exact integers)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    index = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 1)
    return np.bincount(index, minlength=len(edges)).astype(np.float64)


def conformal_quantile(counts: np.ndarray, edges: np.ndarray, level: float) -> float | None:
    """The split-conformal quantile at ``level`` of the scores binned in ``counts`` (see :func:`histogram`).

    The ``ceil((n + 1) * level)``-th smallest score, rounded up to its bin's upper edge; None (unbounded) when that
    rank exceeds ``n`` or the score lies in the open last bin.

    Raises
    ------
    ValueError
        If ``level`` is not in (0, 1) or the counts do not match the edges.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"got level {level}, expected a number in (0, 1)")
    c = np.asarray(counts, dtype=np.float64)
    if c.shape != (len(edges),):
        raise ValueError(f"got {c.shape} counts, expected ({len(edges)},) for these edges")
    n = int(round(float(c.sum())))
    rank = math.ceil((n + 1) * level - 1e-9)
    if n == 0 or rank > n:
        return None
    bin_index = int(np.searchsorted(np.cumsum(c), rank - 0.5))
    return None if bin_index >= len(edges) - 1 else float(edges[bin_index + 1])


def sample_quantile(scores: np.ndarray, level: float) -> float | None:
    """The exact split-conformal quantile of raw ``scores`` (the pooled reference the histogram rounds up)."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[~np.isnan(scores)])
    rank = math.ceil((len(s) + 1) * level - 1e-9)
    return None if len(s) == 0 or rank > len(s) else float(s[rank - 1])


def add_sums(parts: Iterable[Mapping[str, np.ndarray]]) -> Sums:
    """Element-wise sum of partners' :data:`Sums` (same names and shapes; a name missing in one counts as zero)."""
    total: Sums = {}
    for part in parts:
        for name, value in part.items():
            arr = np.asarray(value, dtype=np.float64)
            total[name] = total[name] + arr if name in total else arr.copy()
    return total


def nll_grid(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Summed binary NLL of ``labels`` under ``sigmoid(logits / T)`` for every ``T`` in :data:`TEMPERATURES`."""
    z = np.asarray(logits, dtype=np.float64)[None, :] / TEMPERATURES[:, None]
    y = np.asarray(labels, dtype=np.float64)[None, :]
    # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
    return (y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)).sum(axis=1)


def best_temperature(nll: np.ndarray) -> float:
    """The grid temperature with the least summed NLL (1.0 when nothing was summed)."""
    nll = np.asarray(nll, dtype=np.float64)
    return 1.0 if not np.any(nll) else float(TEMPERATURES[int(np.argmin(nll))])


@dataclass(frozen=True, slots=True)
class EmbeddingStats:
    """Federation-wide mean and precision of training-set graph embeddings (from summed moments)."""

    mean: np.ndarray
    """``[d]``."""
    precision: np.ndarray
    """``[d, d]``, the inverse of the shrunk covariance."""


def embedding_stats(n: float, total: np.ndarray, outer: np.ndarray) -> EmbeddingStats:
    """Mean and shrunk inverse covariance from ``n``, ``sum h`` ``[d]`` and ``sum h h^T`` ``[d, d]``.

    Raises
    ------
    ValueError
        If fewer than two embeddings were summed.
    """
    if n < 2:
        raise ValueError(f"got {n:g} training embeddings, expected at least 2 to estimate a covariance")
    mean = np.asarray(total, dtype=np.float64) / n
    cov = (np.asarray(outer, dtype=np.float64) - n * np.outer(mean, mean)) / (n - 1)
    cov = (cov + cov.T) / 2
    ridge = RIDGE * max(float(np.trace(cov)) / len(mean), 1e-12)
    return EmbeddingStats(mean, np.linalg.inv(cov + ridge * np.eye(len(mean))))


def domain_scores(embeddings: np.ndarray, stats: EmbeddingStats) -> np.ndarray:
    """``sqrt(Mahalanobis^2 / d)`` per row of ``embeddings`` ``[n, d]``."""
    diff = np.asarray(embeddings, dtype=np.float64) - stats.mean
    m2 = np.einsum("ij,jk,ik->i", diff, stats.precision, diff)
    return np.sqrt(np.maximum(m2, 0.0) / diff.shape[1])


# ---- the calibration a model carries ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskCalibration:
    """One task's calibration. Per level: regression half-widths (original units), classification logit
    thresholds; None means unbounded (an infinite interval; a class always in the set)."""

    name: str
    type: str
    n: int
    """Calibration labels it was computed from (all partners)."""
    half_widths: tuple[float | None, ...] = ()
    temperature: float | None = None
    include_1_from: tuple[float | None, ...] = ()
    """Class 1 is in the set when the raw logit is at least this."""
    include_0_to: tuple[float | None, ...] = ()
    """Class 0 is in the set when the raw logit is at most this."""


@dataclass(frozen=True, slots=True)
class DomainModel:
    mean: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    threshold: float | None
    """Molecules scoring above this are out of domain (None: never)."""
    level: float
    """The share of calibration molecules (from all partners) at or below ``threshold``, at least."""

    def stats(self) -> EmbeddingStats:
        return EmbeddingStats(np.asarray(self.mean), np.asarray(self.precision))


@dataclass(frozen=True, slots=True)
class Calibration:
    """What a model carries beside its weights to put intervals, sets and a domain flag on every prediction."""

    method: str
    """``federated`` (pooled histograms) or ``mondrian`` (partners measured with their own; the model carries the
    federated one)."""
    levels: tuple[float, ...]
    tasks: tuple[TaskCalibration, ...]
    domain: DomainModel | None = None


def build_calibration(
    sums: Mapping[str, np.ndarray],
    *,
    task_names: Sequence[str],
    task_types: Sequence[str],
    std: Sequence[float],
    levels: Sequence[float],
    method: str,
    domain: EmbeddingStats | None = None,
    domain_level: float = 0.95,
) -> Calibration:
    """Read the calibration off summed :func:`score_sums` (one partner's, or the federation's)."""
    tasks = []
    for i, (name, kind) in enumerate(zip(task_names, task_types, strict=True)):
        if kind == "regression":
            counts = np.asarray(sums[f"res:{name}"])
            qs = [conformal_quantile(counts, RESIDUAL_EDGES, a) for a in levels]
            widths = tuple(None if q is None else q * float(std[i]) for q in qs)
            tasks.append(TaskCalibration(name, kind, int(counts.sum()), half_widths=widths))
        else:
            c0, c1 = np.asarray(sums[f"cls0:{name}"]), np.asarray(sums[f"cls1:{name}"])
            q1 = [conformal_quantile(c1, LOGIT_EDGES, a) for a in levels]
            q0 = [conformal_quantile(c0, LOGIT_EDGES, a) for a in levels]
            tasks.append(
                TaskCalibration(
                    name,
                    kind,
                    int(c0.sum() + c1.sum()),
                    temperature=best_temperature(sums[f"nll:{name}"]),
                    include_1_from=tuple(None if q is None else -q for q in q1),
                    include_0_to=tuple(q0),
                )
            )
    model = None
    if domain is not None:
        threshold = conformal_quantile(np.asarray(sums["domain"]), DOMAIN_EDGES, domain_level)
        model = DomainModel(
            tuple(domain.mean.tolist()), tuple(tuple(r) for r in domain.precision.tolist()), threshold, domain_level
        )
    return Calibration(method, tuple(levels), tuple(tasks), model)


def score_sums(
    y: np.ndarray,
    raw: np.ndarray,
    pred: np.ndarray,
    *,
    task_names: Sequence[str],
    task_types: Sequence[str],
    std: Sequence[float],
    domain: np.ndarray | None = None,
) -> Sums:
    """A partner's calibration summary: histograms and NLL sums only.

    ``y`` ``[n, T]`` labels (NaN = missing), ``raw`` ``[n, T]`` raw outputs (logits for classification), ``pred``
    ``[n, T]`` predictions in original units, ``domain`` ``[n]`` domain scores (or None)."""
    out: Sums = {}
    for i, (name, kind) in enumerate(zip(task_names, task_types, strict=True)):
        has = ~np.isnan(y[:, i])
        if kind == "regression":
            out[f"res:{name}"] = histogram(np.abs(y[has, i] - pred[has, i]) / float(std[i]), RESIDUAL_EDGES)
        else:
            z, label = raw[has, i], y[has, i]
            out[f"nll:{name}"] = nll_grid(z, label)
            out[f"cls1:{name}"] = histogram(-z[label == 1], LOGIT_EDGES)
            out[f"cls0:{name}"] = histogram(z[label == 0], LOGIT_EDGES)
    if domain is not None:
        out["domain"] = histogram(domain, DOMAIN_EDGES)
    return out


def sums_layout(task_names: Sequence[str], task_types: Sequence[str], *, domain: bool) -> dict[str, tuple[int, ...]]:
    """Names and shapes of :func:`score_sums`' output (what a secure sum is masked over)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, kind in zip(task_names, task_types, strict=True):
        if kind == "regression":
            out[f"res:{name}"] = (len(RESIDUAL_EDGES),)
        else:
            out[f"nll:{name}"] = (len(TEMPERATURES),)
            out[f"cls1:{name}"] = (len(LOGIT_EDGES),)
            out[f"cls0:{name}"] = (len(LOGIT_EDGES),)
    if domain:
        out["domain"] = (len(DOMAIN_EDGES),)
    return out


def _bound(value: float | None, default: float) -> float:
    return default if value is None else value


def intervals(pred: np.ndarray, task: TaskCalibration) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level, ``(lower, upper)`` arrays around regression predictions ``pred`` ``[n]`` (±inf when unbounded)."""
    return [(pred - _bound(w, math.inf), pred + _bound(w, math.inf)) for w in task.half_widths]


def prediction_sets(raw: np.ndarray, task: TaskCalibration) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level, ``(has_0, has_1)`` boolean arrays: whether each class is in the set of each logit in ``raw``."""
    return [
        (raw <= _bound(t0, math.inf), raw >= _bound(t1, -math.inf))
        for t0, t1 in zip(task.include_0_to, task.include_1_from, strict=True)
    ]


def calibrated_probability(raw: np.ndarray, task: TaskCalibration) -> np.ndarray:
    """``sigmoid(raw / T)``."""
    t = task.temperature or 1.0
    return 1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=np.float64) / t))


def percent(level: float) -> str:
    """``0.9 -> "90"``, ``0.975 -> "97.5"`` (the level as it appears in metric and column names)."""
    return f"{level * 100:g}"
