"""Which aggregation strategies can run under secure aggregation.

Secure aggregation reveals only ``sum_k n_k w_k`` and ``sum_k n_k`` of the round. Strategies that need nothing but
the (weighted) mean can use it; strategies that look at individual updates (medians, trimming, distances between
updates, per-partner loss reweighting) cannot.
"""

from __future__ import annotations

SUM_ONLY_STRATEGIES = frozenset({"fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "scaffold"})
"""Need only the weighted mean (server optimizers act on the mean delta; SCAFFOLD's control deltas are sums too)."""
INDIVIDUAL_UPDATE_STRATEGIES = frozenset({"fedmedian", "fedtrimmedavg", "krum", "multikrum", "qfedavg"})
"""Need every partner's update: coordinate-wise median/trimming, pairwise distances, per-partner loss weights."""


def requires_individual_updates(strategy_name: str) -> bool:
    """Whether ``strategy_name`` must see individual updates (and so cannot run under secure aggregation).

    Raises
    ------
    ValueError
        If the strategy is in neither list; a new strategy must be classified here.
    """
    if strategy_name in INDIVIDUAL_UPDATE_STRATEGIES:
        return True
    if strategy_name in SUM_ONLY_STRATEGIES:
        return False
    known = sorted(SUM_ONLY_STRATEGIES | INDIVIDUAL_UPDATE_STRATEGIES)
    raise ValueError(f"unknown strategy {strategy_name!r}; choose from {known}")


def check_strategy_compatible(strategy_name: str, secure_aggregation: bool) -> None:
    """Raise if ``strategy_name`` cannot run with ``secure_aggregation`` on.

    Raises
    ------
    ValueError
        "strategy 'krum' needs individual updates and cannot run under secure aggregation; choose from [...]",
        or an unknown-strategy message.
    """
    if requires_individual_updates(strategy_name) and secure_aggregation:
        raise ValueError(
            f"strategy {strategy_name!r} needs individual updates and cannot run under secure aggregation; "
            f"choose from {sorted(SUM_ONLY_STRATEGIES)}"
        )
