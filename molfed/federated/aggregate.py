"""Pure aggregation functions: no I/O, no logging, no torch modules.

Inputs are weights (``{name: array}``) that :func:`molfed.federated.strategies.validate_updates` has checked (same
names, shapes, finite). Accumulation is in float64; returned weights are float32, returned server state (momentum,
second moments, control variates) float64. "Delta" is always ``target - current``: the direction the federation
moved this round (the negative of Reddi et al.'s pseudo-gradient sign convention is folded in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from molfed.federated.types import Weights

Arrays = dict[str, np.ndarray]


def _f32(weights: Mapping[str, np.ndarray]) -> Arrays:
    return {name: np.asarray(a).astype(np.float32) for name, a in weights.items()}


def _stack(weights: Sequence[Weights], name: str) -> np.ndarray:
    """``[K, *shape]`` float64 stack of one tensor over ``K`` updates."""
    return np.stack([np.asarray(w[name], dtype=np.float64) for w in weights])


def _check_nonempty(what: str, items: Sequence[object]) -> None:
    if not items:
        raise ValueError(f"{what}: got no results, expected at least one")


def fedavg(results: Sequence[tuple[Weights, int]]) -> Arrays:
    """Sample-weighted mean (McMahan et al. 2017): ``sum_k n_k w_k / sum_k n_k``.

    Raises
    ------
    ValueError
        If ``results`` is empty or the total sample count is not positive.
    """
    _check_nonempty("fedavg", results)
    total = sum(n for _, n in results)
    if total <= 0:
        raise ValueError(f"fedavg: got total sample count {total}, expected > 0")
    names = list(results[0][0])
    out: Arrays = {}
    for name in names:
        acc = np.zeros(np.shape(results[0][0][name]), dtype=np.float64)
        for weights, n in results:
            acc += np.asarray(weights[name], dtype=np.float64) * (n / total)
        out[name] = acc.astype(np.float32)
    return out


def coordinate_median(weights: Sequence[Weights]) -> Arrays:
    """Coordinate-wise median (Yin et al. 2018), unweighted; the mean of the two middle values for even ``K``."""
    _check_nonempty("coordinate_median", weights)
    return {name: np.median(_stack(weights, name), axis=0).astype(np.float32) for name in weights[0]}


def trimmed_mean(weights: Sequence[Weights], beta: float) -> Arrays:
    """Coordinate-wise mean after dropping the ``floor(beta * K)`` largest and smallest values (Yin et al. 2018).

    Raises
    ------
    ValueError
        If ``beta`` is not in ``[0, 0.5)`` or nothing would remain.
    """
    _check_nonempty("trimmed_mean", weights)
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"trimmed_mean: got beta={beta}, expected 0 <= beta < 0.5")
    k, cut = len(weights), int(np.floor(beta * len(weights)))
    out: Arrays = {}
    for name in weights[0]:
        values = np.sort(_stack(weights, name), axis=0)
        out[name] = values[cut : k - cut].mean(axis=0).astype(np.float32)
    return out


def krum_scores(weights: Sequence[Weights], byzantine: int) -> np.ndarray:
    """Krum score per update (Blanchard et al. 2017): the sum of squared distances to its ``K - f - 2`` nearest
    other updates, shape ``[K]``. Krum's guarantee needs ``K >= 2f + 3``; with fewer updates the neighbour count is
    clipped to ``[1, K - 1]`` (the score is still "distance to the closest others", without the guarantee)."""
    _check_nonempty("krum_scores", weights)
    k = len(weights)
    if k == 1:
        return np.zeros(1)
    flat = [np.concatenate([np.asarray(w[n], np.float64).ravel() for n in weights[0]]) for w in weights]
    dist = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            dist[i, j] = dist[j, i] = float(((flat[i] - flat[j]) ** 2).sum())
    neighbours = min(max(k - byzantine - 2, 1), k - 1)
    others = np.sort(dist + np.diag(np.full(k, np.inf)), axis=1)[:, :neighbours]
    return np.asarray(others.sum(axis=1))


def krum(results: Sequence[tuple[Weights, int]], *, byzantine: int, selected: int) -> Arrays:
    """Multi-Krum: the sample-weighted mean of the ``selected`` updates with the lowest Krum scores (ties: lower
    index first). ``selected=1`` is Krum, which returns the chosen update itself.

    Raises
    ------
    ValueError
        If ``results`` is empty or ``selected < 1``.
    """
    _check_nonempty("krum", results)
    if selected < 1:
        raise ValueError(f"krum: got selected={selected}, expected >= 1")
    scores = krum_scores([w for w, _ in results], byzantine)
    chosen = np.argsort(scores, kind="stable")[: min(selected, len(results))]
    return fedavg([results[i] for i in sorted(chosen)])


def delta(current: Weights, target: Weights) -> Arrays:
    """``target - current`` in float64."""
    return {n: np.asarray(target[n], np.float64) - np.asarray(current[n], np.float64) for n in current}


def momentum_step(
    current: Weights, step: Weights, velocity: Weights | None, *, server_lr: float, momentum: float
) -> tuple[Arrays, Arrays]:
    """FedAvgM (Hsu et al. 2019): ``v = momentum * v + step; x = x + server_lr * v``, ``v`` starting at 0.

    Returns the new weights (float32) and velocity (float64).
    """
    new_v = {n: momentum * np.asarray(velocity[n]) + step[n] if velocity else np.array(step[n]) for n in step}
    return _f32({n: np.asarray(current[n], np.float64) + server_lr * new_v[n] for n in current}), new_v


def adaptive_step(
    current: Weights,
    step: Weights,
    m: Weights | None,
    v: Weights | None,
    *,
    rule: str,
    server_lr: float,
    beta_1: float,
    beta_2: float,
    tau: float,
) -> tuple[Arrays, Arrays, Arrays]:
    """One FedAdagrad / FedAdam / FedYogi server step (Reddi et al. 2021, Algorithm 2) on ``step = avg - x``::

        m = beta_1 m + (1 - beta_1) step                  (m starts at 0)
        v = v + step^2                                    adagrad   (v starts at tau^2)
        v = beta_2 v + (1 - beta_2) step^2                adam
        v = v - (1 - beta_2) step^2 sign(v - step^2)      yogi
        x = x + server_lr m / (sqrt(v) + tau)

    No bias correction, as in the paper. Returns new weights (float32), ``m`` and ``v`` (float64).

    Raises
    ------
    ValueError
        If ``rule`` is not one of adagrad, adam, yogi.
    """
    if rule not in ("adagrad", "adam", "yogi"):
        raise ValueError(f"adaptive_step: got rule {rule!r}, expected 'adagrad', 'adam' or 'yogi'")
    new_m: Arrays = {}
    new_v: Arrays = {}
    out: Arrays = {}
    for n, d in step.items():
        m0 = np.asarray(m[n]) if m else np.zeros_like(d)
        v0 = np.asarray(v[n]) if v else np.full_like(d, tau**2)
        new_m[n] = beta_1 * m0 + (1.0 - beta_1) * d
        d2 = d * d
        if rule == "adagrad":
            new_v[n] = v0 + d2
        elif rule == "adam":
            new_v[n] = beta_2 * v0 + (1.0 - beta_2) * d2
        else:
            new_v[n] = v0 - (1.0 - beta_2) * d2 * np.sign(v0 - d2)
        out[n] = np.asarray(current[n], np.float64) + server_lr * new_m[n] / (np.sqrt(new_v[n]) + tau)
    return _f32(out), new_m, new_v


def qfedavg(current: Weights, results: Sequence[tuple[Weights, float]], *, q: float, lipschitz: float) -> Arrays:
    """q-FedAvg (Li et al. 2020, Algorithm 2) from local weights ``w_k`` and losses ``F_k`` of the *received* model::

        dw_k = L (x - w_k);  D_k = F_k^q dw_k;  h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q
        x    = x - sum_k D_k / sum_k h_k

    Unweighted by sample counts (partners are weighted by their loss). ``q = 0`` gives the plain mean of ``w_k``.
    Losses are clamped to ``>= 1e-12``.

    Raises
    ------
    ValueError
        If ``results`` is empty, ``q < 0`` or ``lipschitz <= 0``.
    """
    _check_nonempty("qfedavg", results)
    if q < 0 or lipschitz <= 0:
        raise ValueError(f"qfedavg: got q={q}, lipschitz={lipschitz}, expected q >= 0 and lipschitz > 0")
    num = {n: np.zeros(np.shape(current[n]), np.float64) for n in current}
    den = 0.0
    for weights, loss in results:
        f = max(float(loss), 1e-12)
        dw = {n: lipschitz * -d for n, d in delta(current, weights).items()}
        for n in num:
            num[n] += f**q * dw[n]
        norm2 = sum(float((d * d).sum()) for d in dw.values())
        den += (q * f ** (q - 1.0) * norm2 if q > 0 else 0.0) + lipschitz * f**q
    return _f32({n: np.asarray(current[n], np.float64) - num[n] / den for n in current})


def scaffold_server(
    current: Weights,
    results: Sequence[tuple[Weights, int]],
    control_deltas: Sequence[Weights],
    control: Weights | None,
    *,
    server_lr: float,
    participation: float,
) -> tuple[Arrays, Arrays]:
    """SCAFFOLD's server step (Karimireddy et al. 2020, Algorithm 1, lines 16-17)::

        x = x + server_lr * (sample-weighted mean of y_k - x)
        c = c + participation * mean_k(dc_k)          (participation = |S| / N; c starts at 0)

    Returns new weights (float32) and control variate (float64).

    Raises
    ------
    ValueError
        If ``results`` is empty or ``control_deltas`` has a different length.
    """
    _check_nonempty("scaffold_server", results)
    if len(control_deltas) != len(results):
        raise ValueError(f"scaffold_server: got {len(control_deltas)} control deltas, expected {len(results)}")
    step = delta(current, fedavg(results))
    new_x = _f32({n: np.asarray(current[n], np.float64) + server_lr * step[n] for n in current})
    new_c: Arrays = {}
    for n in current:
        c0 = np.asarray(control[n], np.float64) if control else np.zeros(np.shape(current[n]), np.float64)
        new_c[n] = c0 + participation * _stack(control_deltas, n).mean(axis=0)
    return new_x, new_c


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
