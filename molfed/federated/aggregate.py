"""Pure aggregation functions: no I/O, no logging, no torch modules.

Inputs are sequences of ``(weights, n_samples)`` pairs; names and shapes are assumed checked (see
:func:`molfed.federated.strategies.validate_updates`). Accumulation is in float64, results are float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from molfed.federated.types import Weights


def fedavg(results: Sequence[tuple[Weights, int]]) -> dict[str, np.ndarray]:
    """Sample-weighted mean (McMahan et al. 2017): ``sum_k n_k w_k / sum_k n_k``.

    Raises
    ------
    ValueError
        If ``results`` is empty or the total sample count is not positive.
    """
    if not results:
        raise ValueError("fedavg: got no results, expected at least one")
    total = sum(n for _, n in results)
    if total <= 0:
        raise ValueError(f"fedavg: got total sample count {total}, expected > 0")
    names = list(results[0][0])
    out: dict[str, np.ndarray] = {}
    for name in names:
        acc = np.zeros(np.shape(results[0][0][name]), dtype=np.float64)
        for weights, n in results:
            acc += np.asarray(weights[name], dtype=np.float64) * (n / total)
        out[name] = acc.astype(np.float32)
    return out


def weighted_metrics(metrics: Sequence[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Sample-weighted mean of each metric name over the entries that report it."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for values, n in metrics:
        for key, value in values.items():
            if np.isfinite(value):
                sums[key] = sums.get(key, 0.0) + value * n
                counts[key] = counts.get(key, 0) + n
    return {key: sums[key] / counts[key] for key in sums if counts[key] > 0}
