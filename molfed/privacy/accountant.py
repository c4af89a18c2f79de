"""Privacy accounting: Rényi-DP of the subsampled Gaussian mechanism, per subject, via Opacus's RDP accountant.

A :class:`PrivacyLedger` keeps one history per subject (a partner for sample-level DP, the federation for
client-level DP): entries ``(noise_multiplier, sample_rate, steps)``. Opacus computes the RDP of each entry and
converts the sum to ``(epsilon, delta)``. The ledger holds plain lists and floats only, so a checkpoint can store
its :meth:`PrivacyLedger.state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from opacus.accountants.analysis import rdp as rdp_analysis

#: RDP orders searched for the best conversion to (epsilon, delta): Opacus's defaults.
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))

Entry = tuple[float, float, int]
"""``(noise_multiplier, sample_rate, steps)``."""


@lru_cache(maxsize=256)
def _rdp_per_step(noise: float, rate: float) -> np.ndarray:
    """RDP at :data:`ORDERS` of one step (linear in steps, so cached per mechanism)."""
    rdp = rdp_analysis.compute_rdp(q=rate, noise_multiplier=noise, steps=1, orders=list(ORDERS))
    rdp = np.asarray(rdp, dtype=np.float64)
    rdp.setflags(write=False)
    return rdp


def epsilon_of(history: list[Entry] | tuple[Entry, ...], delta: float) -> float:
    """Epsilon for ``delta`` after the composition of ``history`` (0 for an empty history, inf without noise).

    Raises
    ------
    ValueError
        If ``delta`` is not in (0, 1) or an entry is out of range.
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta: got {delta}, expected 0 < delta < 1")
    if not history:
        return 0.0
    total = np.zeros(len(ORDERS))
    for noise, rate, steps in history:
        if not 0.0 < rate <= 1.0 or steps < 0 or noise < 0:
            raise ValueError(f"accounting entry: got (noise={noise}, rate={rate}, steps={steps}), out of range")
        if noise == 0.0 and steps > 0:
            return math.inf
        total = total + _rdp_per_step(float(noise), float(rate)) * steps
    eps, _ = rdp_analysis.get_privacy_spent(orders=list(ORDERS), rdp=total, delta=delta)
    return float(eps)


def _merge(history: list[Entry], noise: float, rate: float, steps: int) -> list[Entry]:
    """``history`` plus ``steps`` steps of (noise, rate), merged into the last entry when it matches."""
    if history and history[-1][0] == noise and history[-1][1] == rate:
        return [*history[:-1], (noise, rate, history[-1][2] + steps)]
    return [*history, (noise, rate, steps)]


class PrivacyLedger:
    """Accumulated privacy loss per subject (e.g. per partner), composed over rounds.

    Parameters
    ----------
    delta:
        Target delta of every reported epsilon.
    """

    def __init__(self, delta: float) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta: got {delta}, expected 0 < delta < 1")
        self.delta = float(delta)
        self.histories: dict[str, list[Entry]] = {}

    def spend(self, subject: str, *, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Record ``steps`` steps of the subsampled Gaussian mechanism for ``subject``; return its new epsilon."""
        self.histories[subject] = _merge(self.histories.get(subject, []), noise_multiplier, sample_rate, steps)
        return self.epsilon(subject)

    def epsilon(self, subject: str) -> float:
        """Epsilon spent so far by ``subject`` (0 if it never spent)."""
        return epsilon_of(self.histories.get(subject, []), self.delta)

    def epsilon_if(self, subject: str, *, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Epsilon ``subject`` would have after spending these steps (the ledger is not changed)."""
        history = _merge(self.histories.get(subject, []), noise_multiplier, sample_rate, steps)
        return epsilon_of(history, self.delta)

    def epsilons(self) -> dict[str, float]:
        """Epsilon by subject."""
        return {s: self.epsilon(s) for s in sorted(self.histories)}

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and floats (JSON-able)."""
        return {"delta": self.delta, "histories": {s: [list(e) for e in h] for s, h in self.histories.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises
        ------
        ValueError
            If the keys differ or ``delta`` differs from this ledger's.
        """
        if set(state) != {"delta", "histories"}:
            raise ValueError(f"privacy ledger state: got keys {sorted(state)}, expected ['delta', 'histories']")
        if float(state["delta"]) != self.delta:
            raise ValueError(f"privacy ledger state: delta {state['delta']} differs from the configured {self.delta}")
        self.histories = {
            str(s): [(float(n), float(q), int(k)) for n, q, k in h] for s, h in dict(state["histories"]).items()
        }
