"""Which aggregation strategies can run under secure aggregation (read from :mod:`molfed.federated.capabilities`).

Secure aggregation reveals only ``sum_k n_k w_k`` and ``sum_k n_k`` of the round. Strategies that need nothing but
the (weighted) mean can use it; strategies that look at individual updates (medians, trimming, distances between
updates, per-partner loss reweighting) or need per-partner tensors beside the update (SCAFFOLD's control deltas)
cannot.
"""

from __future__ import annotations

from molfed.federated.capabilities import caps, names_where


def requires_individual_updates(strategy_name: str) -> bool:
    """Whether ``strategy_name`` must see more than the sum of updates (and so cannot run under secure aggregation).

    Raises
    ------
    ValueError
        If the strategy is not registered.
    """
    return not caps(strategy_name).secure_sum


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
            f"choose from {names_where('secure_sum')}"
        )
