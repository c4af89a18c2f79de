"""The privacy budget: what one round costs, whether the next round still fits, epsilon metrics per round.

Every round's cost follows from public numbers (noise multiplier, partners' training-set sizes, batch size, local
epochs), so the coordinator computes epsilon *before* running a round. Sample level: one subject per partner,
``epochs * round(n / batch_size)`` steps of the Poisson-subsampled Gaussian mechanism with rate ``batch_size / n``.
Client level: one subject (the federation), one full-participation Gaussian step per round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from molfed.errors import MolfedError
from molfed.federated.dp_client import PrivateStrategy
from molfed.federated.strategy_base import Strategy
from molfed.privacy.accountant import PrivacyLedger
from molfed.privacy.dpsgd import sampling

#: Subject of client-level accounting.
FEDERATION = "federation"


class PrivacyBudgetError(MolfedError):
    """The next round would spend more privacy than ``privacy.epsilon_budget`` allows."""


@dataclass(frozen=True, slots=True)
class RoundCost:
    subject: str
    """Partner name (sample level) or ``federation`` (client level)."""
    noise_multiplier: float
    sample_rate: float
    steps: int
    """Mechanism invocations per round."""


def round_costs(
    mode: str, *, noise_multiplier: float, n_train: Mapping[str, int], batch_size: int, epochs: int
) -> list[RoundCost]:
    """What one round spends per subject (empty when ``mode`` is ``off``)."""
    if mode == "off":
        return []
    if mode == "client":
        return [RoundCost(FEDERATION, noise_multiplier, 1.0, 1)]
    costs = []
    for name in sorted(n_train):
        rate, per_epoch = sampling(n_train[name], batch_size)
        costs.append(RoundCost(name, noise_multiplier, rate, epochs * per_epoch))
    return costs


def next_round_allowed(
    ledger: PrivacyLedger, costs: Sequence[RoundCost], budget: float | None, server_round: int
) -> tuple[bool, str]:
    """Whether running ``server_round`` keeps every subject's epsilon within ``budget`` (None: no budget).

    Returns ``(allowed, message)``; the message names the round, the subject, its epsilon now and after.
    """
    if budget is None or not costs:
        return True, ""
    after = {
        c.subject: ledger.epsilon_if(
            c.subject, noise_multiplier=c.noise_multiplier, sample_rate=c.sample_rate, steps=c.steps
        )
        for c in costs
    }
    worst = max(after, key=lambda s: after[s])
    if after[worst] <= budget:
        return True, ""
    return False, (
        f"privacy budget: round {server_round} would raise the epsilon of {_who(worst)} from "
        f"{ledger.epsilon(worst):.3g} to {after[worst]:.3g} > privacy.epsilon_budget {budget:g} "
        f"(delta {ledger.delta:g})"
    )


def rounds_within_budget(
    costs: Sequence[RoundCost], *, delta: float, budget: float | None, max_rounds: int
) -> tuple[int, str]:
    """How many of ``max_rounds`` rounds fit in ``budget`` from an empty ledger, and the refusal message (or "")."""
    ledger = PrivacyLedger(delta)
    for r in range(1, max_rounds + 1):
        allowed, message = next_round_allowed(ledger, costs, budget, r)
        if not allowed:
            return r - 1, message
        spend_round(ledger, costs)
    return max_rounds, ""


def require_rounds(costs: Sequence[RoundCost], *, delta: float, budget: float | None, rounds: int) -> None:
    """Refuse, before any round runs, a federation whose configured rounds would exceed the budget.

    Raises
    ------
    PrivacyBudgetError
        Naming how many rounds fit and what to change.
    """
    fit, message = rounds_within_budget(costs, delta=delta, budget=budget, max_rounds=rounds)
    if fit < rounds:
        raise PrivacyBudgetError(
            f"{message}; the budget allows {fit} of federation.rounds={rounds} rounds: lower federation.rounds, "
            "raise privacy.noise_multiplier or privacy.epsilon_budget"
        )


def require_next_round(ledger: PrivacyLedger, costs: Sequence[RoundCost], budget: float | None, r: int) -> None:
    """The guard before each round.

    Raises
    ------
    PrivacyBudgetError
        If round ``r`` would exceed the budget; nothing of round ``r`` has run.
    """
    allowed, message = next_round_allowed(ledger, costs, budget, r)
    if not allowed:
        raise PrivacyBudgetError(f"{message}; stopping before round {r}")


def spend_round(
    ledger: PrivacyLedger, costs: Sequence[RoundCost], participants: Iterable[str] | None = None
) -> dict[str, float]:
    """Record one round (for ``participants`` only, when given; client level always) and return its metrics."""
    who = None if participants is None else set(participants)
    for c in costs:
        if who is None or c.subject == FEDERATION or c.subject in who:
            ledger.spend(c.subject, noise_multiplier=c.noise_multiplier, sample_rate=c.sample_rate, steps=c.steps)
    return epsilon_metrics(ledger)


def epsilon_metrics(ledger: PrivacyLedger) -> dict[str, float]:
    """``dp_epsilon.<partner>`` and their max ``dp_epsilon`` (sample level), or ``dp_client_epsilon``."""
    eps = ledger.epsilons()
    if FEDERATION in eps:
        return {"dp_client_epsilon": eps[FEDERATION]}
    out = {f"dp_epsilon.{s}": e for s, e in eps.items()}
    if eps:
        out["dp_epsilon"] = max(eps.values())
    return out


def _who(subject: str) -> str:
    return "the federation (client level)" if subject == FEDERATION else f"partner {subject!r}"


def wrap_strategy(
    strategy: Strategy, *, mode: str, noise_multiplier: float, max_grad_norm: float, noise_seed: int | None
) -> Strategy:
    """``strategy`` itself when ``mode`` is ``off``, else a :class:`PrivateStrategy` around it."""
    if mode == "off":
        return strategy
    return PrivateStrategy(
        strategy, mode=mode, noise_multiplier=noise_multiplier, max_norm=max_grad_norm, noise_seed=noise_seed
    )


class BudgetHook:
    """The privacy budget as a round-loop hook: refuse a round that would exceed it, then log what it spent.

    Built after partners are prepared (costs need their training-set sizes); refuses, before any round runs, a
    federation whose configured rounds cannot fit. Its ledger is checkpointed with the round (``state_dict``).
    """

    def __init__(self, mode: str, *, noise_multiplier: float, delta: float, budget: float | None, **cost_args: Any):
        self.costs = round_costs(mode, noise_multiplier=noise_multiplier, **cost_args)
        self.ledger, self.budget = PrivacyLedger(delta), budget

    def check_rounds(self, rounds: int) -> None:
        require_rounds(self.costs, delta=self.ledger.delta, budget=self.budget, rounds=rounds)

    def before_round(self, server_round: int) -> None:
        require_next_round(self.ledger, self.costs, self.budget, server_round)

    def after_round(self, server_round: int, participants: Iterable[str]) -> dict[str, float]:
        return spend_round(self.ledger, self.costs, participants) if self.costs else {}

    def state_dict(self) -> dict[str, Any]:
        return self.ledger.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ledger.load_state_dict(state)
