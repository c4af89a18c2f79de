"""Poisoning drills: one malicious partner among honest ones, run through the product's integrity path.

The malicious partner trains honestly on its own data and then, every round, replaces what it sends by one of
:data:`ATTACKS`. Honest partners (and the malicious one, which holds a valid key) sign their updates with
:func:`~molfed.federated.sealing.seal_update`; the coordinator aggregates with a
:class:`~molfed.federated.integrity.GuardedStrategy` (signature checks plus the configured delta screens) around
the chosen strategy, in the product's engine with the in-process pool
(:func:`~molfed.federated.inprocess.run_federation`). Used by the drill tests and ``bench/poisoning.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from molfed.federated import partner as p
from molfed.federated.coordinator import combine_partners, initial_weights
from molfed.federated.inprocess import run_federation
from molfed.federated.integrity import GuardedStrategy, RoundCheck, Screens
from molfed.federated.sealing import seal_update
from molfed.federated.signing import generate_keypair, load_private_key
from molfed.federated.strategies import build_strategy
from molfed.federated.types import Update, Weights
from molfed.models.model import ModelSpec

Attack = Callable[[Weights, Weights], dict[str, np.ndarray]]
"""``(honest weights, global weights) -> weights sent``."""


def _scaled(weights: Weights, current: Weights) -> dict[str, np.ndarray]:
    return {n: (np.asarray(w) * 100.0).astype(np.float32) for n, w in weights.items()}


def _sign_flipped(weights: Weights, current: Weights) -> dict[str, np.ndarray]:
    return {n: (2.0 * np.asarray(current[n]) - np.asarray(w)).astype(np.float32) for n, w in weights.items()}


def _nan(weights: Weights, current: Weights) -> dict[str, np.ndarray]:
    return {n: np.full_like(np.asarray(w), np.nan) for n, w in weights.items()}


ATTACKS: dict[str, Attack | None] = {
    "none": None,
    "scaled_x100": _scaled,
    "sign_flip": _sign_flipped,
    "nan": _nan,
}
"""``scaled_x100``: weights times 100; ``sign_flip``: the honest delta negated (``2 w_global - w``), a norm no
bound notices; ``nan``: every value NaN."""


@dataclass(frozen=True, slots=True)
class DrillResult:
    test_rmse: float
    """RMSE of the final global model over the union of every partner's test split."""
    rejected: int
    """Updates rejected over all rounds (signature, screens or the shared guard)."""
    rejected_honest: int
    """Of which from honest partners."""


def run_drill(
    partners: Sequence[p.PartnerData],
    *,
    spec: ModelSpec,
    attack: str,
    strategy: str,
    screens: Screens | None,
    settings: p.TrainSettings,
    rounds: int,
    seed: int = 0,
    malicious: str | None = None,
    strategy_options: Mapping[str, float] | None = None,
) -> DrillResult:
    """One federation with ``malicious`` (default: the last partner) playing ``attack`` every round.

    Raises
    ------
    ValueError
        If ``attack`` or ``strategy`` is unknown.
    QuorumError
        If a round keeps fewer than all-but-one partners.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {sorted(ATTACKS)}")
    bad = malicious or partners[-1].name
    tamper = ATTACKS[attack]
    run_id = f"drill-{attack}"
    private, public = {}, {}
    for d in partners:
        pem, public[d.name] = generate_keypair()
        private[d.name] = load_private_key(pem)
    checks: list[RoundCheck] = []
    guard = GuardedStrategy(
        build_strategy(strategy, **dict(strategy_options or {})),
        run_id=run_id,
        public_keys=public,
        screens=screens,
        on_round=checks.append,
    )

    def seal(update: Update, server_round: int, current: Weights) -> Update:
        if update.partner == bad and tamper is not None:
            update = Update(update.partner, tamper(update.weights, current), update.n_samples, update.metrics)
        return seal_update(update, run_id=run_id, server_round=server_round, signing_key=private[update.partner])

    result = run_federation(
        partners,
        spec=spec,
        init_weights=initial_weights(spec, seed),
        strategy=guard,
        settings=settings,
        rounds=rounds,
        seed=seed,
        run_id=run_id,
        min_partners=len(partners) - 1,
        seal=seal,
    )
    test = {
        d.name: p.evaluate_partner(d, spec=spec, weights=result.weights, scaling=result.scaling, splits=("test",))[
            "test"
        ]
        for d in partners
    }
    sizes = {d.name: d.summary.n_test for d in partners}
    rejected = [f for c in checks for f in c.rejected]
    return DrillResult(
        combine_partners(test, sizes)["rmse"], len(rejected), sum(1 for f in rejected if f.partner != bad)
    )
