"""Client-level DP (DP-FedAvg, McMahan et al. 2018) and the strategy wrapper that switches DP on.

Client level: each partner's update ``delta_k = w_k - w`` is clipped to L2 norm ``S`` (all tensors together), the
clipped deltas are averaged with equal weights and a *fixed* denominator (the partners invited this round, so one
partner's presence moves the sum by at most ``S``), and Gaussian noise ``N(0, (z S / m)^2)`` is added to the mean.
The noisy mean is then handed to the inner strategy as one pseudo-update: FedAvg applies it as is, server
optimizers (FedAvgM, FedAdam, ...) post-process it. Protects every partner's *whole* contribution from whoever sees
the global models (other partners, model users), not from the coordinator, which sees individual updates.

Sample level: the wrapper only adds the DP-SGD settings to ``fit_options``; partners do the rest
(:mod:`molfed.privacy.dpsgd`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from molfed.federated.capabilities import caps
from molfed.federated.strategy_base import Strategy
from molfed.federated.types import Update, Weights
from molfed.privacy import DP_MAX_GRAD_NORM, DP_NOISE_MULTIPLIER, DP_NOISE_SEED


def clip_delta(current: Weights, weights: Weights, bound: float) -> tuple[dict[str, np.ndarray], float]:
    """``(clipped delta, norm before clipping)``: ``weights - current`` scaled to L2 norm <= ``bound``."""
    delta = {n: np.asarray(weights[n], dtype=np.float64) - np.asarray(a, dtype=np.float64) for n, a in current.items()}
    norm = float(np.sqrt(sum(float((d * d).sum()) for d in delta.values())))
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    return {n: d * factor for n, d in delta.items()}, norm


def noisy_mean_delta(
    current: Weights,
    updates: Sequence[Update],
    *,
    bound: float,
    noise_multiplier: float,
    denominator: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``sum_k clip(delta_k) / m + N(0, (z S / m)^2)`` per coordinate, ``m = denominator`` (float64).

    Raises
    ------
    ValueError
        If ``denominator`` is smaller than the number of updates.
    """
    if denominator < max(1, len(updates)):
        raise ValueError(f"client DP: got denominator {denominator}, expected >= {max(1, len(updates))}")
    total = {n: np.zeros(np.shape(a), dtype=np.float64) for n, a in current.items()}
    for u in updates:
        clipped, _ = clip_delta(current, u.weights, bound)
        for n in total:
            total[n] += clipped[n]
    std = noise_multiplier * bound / denominator
    return {n: t / denominator + rng.normal(0.0, std, size=t.shape) for n, t in total.items()}


class PrivateStrategy(Strategy):
    """Wrap a strategy with sample-level (``mode="sample"``) or client-level (``mode="client"``) DP.

    Raises
    ------
    ValueError
        If ``mode`` is unknown or the inner strategy cannot work with it.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        mode: str,
        noise_multiplier: float,
        max_norm: float,
        noise_seed: int | None = None,
    ) -> None:
        if mode not in ("sample", "client"):
            raise ValueError(f"unknown privacy mode {mode!r}; choose from ['client', 'sample']")
        able = caps(inner.name)  # client: only the (noisy) mean update; sample: no extras computed without noise
        if not (able.client_dp if mode == "client" else able.sample_dp):
            raise ValueError(f"strategy {inner.name!r} cannot run with privacy mode {mode!r}")
        self.inner, self.mode = inner, mode
        self.name = inner.name  # type: ignore[misc]
        self.options = inner.options
        self.required_metrics = inner.required_metrics  # type: ignore[misc]
        self.required_extras = inner.required_extras  # type: ignore[misc]
        self.noise_multiplier, self.max_norm, self.noise_seed = noise_multiplier, max_norm, noise_seed

    def fit_options(self, server_round: int) -> dict[str, float]:
        options = dict(self.inner.fit_options(server_round))
        if self.mode == "sample":
            options[DP_NOISE_MULTIPLIER] = self.noise_multiplier
            options[DP_MAX_GRAD_NORM] = self.max_norm
            if self.noise_seed is not None:
                options[DP_NOISE_SEED] = float(self.noise_seed)
        return options

    def fit_tensors(self, server_round: int, current: Weights) -> dict[str, dict[str, np.ndarray]]:
        return self.inner.fit_tensors(server_round, current)

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        if self.mode == "sample":
            return self.inner.aggregate(server_round, current, updates, invited=invited)
        seed = secrets.randbits(128) if self.noise_seed is None else [self.noise_seed, server_round]
        mean = noisy_mean_delta(
            current,
            updates,
            bound=self.max_norm,
            noise_multiplier=self.noise_multiplier,
            denominator=invited,
            rng=np.random.default_rng(seed),
        )
        pseudo = Update(
            partner="noisy-mean",
            weights={n: (np.asarray(current[n], dtype=np.float64) + d).astype(np.float32) for n, d in mean.items()},
            n_samples=1,
        )
        return self.inner.aggregate(server_round, current, [pseudo], invited=1)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)
