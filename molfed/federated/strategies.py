"""Aggregation strategies, chosen by name from :data:`STRATEGIES`.

A strategy holds hyperparameters and server state; every round's updates pass through **one** shared guard,
:func:`validate_updates`, before the strategy's pure aggregation function sees them. Later strategies (server
optimizers, proximal terms, robust aggregators) plug in by overriding :meth:`Strategy.fit_options`,
:meth:`Strategy.aggregate` and the state methods; the flow does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from molfed.federated.aggregate import fedavg
from molfed.federated.types import Failure, QuorumError, Update, Weights
from molfed.federated.weights import check_compatible


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    weights: dict[str, np.ndarray]
    """New global weights."""
    accepted: tuple[str, ...]
    """Partners whose updates were aggregated."""
    failures: tuple[Failure, ...]
    """Partners that failed or whose updates were rejected, with reasons."""


def validate_updates(
    current: Weights, updates: Sequence[Update], failures: Sequence[Failure], *, min_partners: int
) -> tuple[list[Update], list[Failure]]:
    """Reject unusable updates (wrong names/shapes, NaN/inf, no samples) and enforce the quorum.

    Raises
    ------
    QuorumError
        If fewer than ``min_partners`` updates remain; the message names the failed partners and reasons.
    """
    accepted: list[Update] = []
    rejected = list(failures)
    for update in updates:
        problem = check_compatible(current, update.weights)
        if problem is None and update.n_samples <= 0:
            problem = f"got n_samples={update.n_samples}, expected > 0"
        if problem is None:
            accepted.append(update)
        else:
            rejected.append(Failure(update.partner, f"update rejected: {problem}"))
    if len(accepted) < min_partners:
        reasons = "; ".join(f"{f.partner}: {f.reason}" for f in rejected) or "no partner reported"
        raise QuorumError(f"{len(accepted)} usable update(s), quorum is {min_partners} ({reasons})")
    return accepted, rejected


class Strategy:
    """Base class. Subclasses set ``name`` and implement :meth:`aggregate`."""

    name: ClassVar[str]

    def fit_options(self, server_round: int) -> dict[str, float]:
        """Extra options sent to partners' local training this round (e.g. a proximal term)."""
        return {}

    def aggregate(self, server_round: int, current: Weights, updates: Sequence[Update]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Server state needed to resume (empty for stateless strategies)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def run_round(
        self,
        server_round: int,
        current: Weights,
        updates: Sequence[Update],
        failures: Sequence[Failure] = (),
        *,
        min_partners: int = 1,
    ) -> RoundOutcome:
        """Validate, enforce the quorum, aggregate."""
        accepted, rejected = validate_updates(current, updates, failures, min_partners=min_partners)
        weights = self.aggregate(server_round, current, accepted)
        return RoundOutcome(weights, tuple(u.partner for u in accepted), tuple(rejected))


class FedAvg(Strategy):
    """Federated averaging weighted by training-sample counts."""

    name = "fedavg"

    def aggregate(self, server_round: int, current: Weights, updates: Sequence[Update]) -> dict[str, np.ndarray]:
        return fedavg([(u.weights, u.n_samples) for u in updates])


STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}


def build_strategy(name: str, **options: Any) -> Strategy:
    """Instantiate a registered strategy.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the choices.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}") from None
    return cls(**options)
