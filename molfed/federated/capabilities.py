"""What each aggregation strategy can do, declared once, without torch: the registry of strategy names.

Config validation (secure aggregation, privacy modes, sites mode), the secure-aggregation check and the docs read
these flags; the implementations (:mod:`molfed.federated.strategies`) are registered under the same names, and a
contract test checks that both registries hold the same names. Adding a strategy: its class in
``molfed/federated/strategies.py`` plus one :class:`StrategyCaps` line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StrategyCaps:
    name: str
    individual_updates: bool
    """Looks at each partner's update (medians, trimming, distances, per-partner loss weights): it cannot run on a
    secure sum, and client-level DP cannot feed it one noisy pseudo-update."""
    server_tensors: bool = False
    """Sends weight-shaped tensors to partners each round (``fit_tensors``, e.g. control variates) and needs extra
    tensors back: sites mode does not carry them yet, and secure aggregation does not sum them."""
    private_statistics: bool = False
    """Partners send statistics of their data besides the update (a loss, control deltas) computed without DP
    noise: sample-level DP would not cover them."""
    robust: bool = False
    """Tolerates a minority of arbitrary (Byzantine) updates."""

    @property
    def secure_sum(self) -> bool:
        """Runs under secure aggregation (needs only the weighted sum of updates)."""
        return not (self.individual_updates or self.server_tensors)

    @property
    def client_dp(self) -> bool:
        """Runs under client-level DP (one clipped, noised mean update a round)."""
        return not (self.individual_updates or self.server_tensors)

    @property
    def sample_dp(self) -> bool:
        """Runs under sample-level DP (everything a partner sends passes through DP-SGD)."""
        return not self.private_statistics

    @property
    def sites(self) -> bool:
        """Runs in sites mode."""
        return not self.server_tensors


STRATEGY_CAPS: dict[str, StrategyCaps] = {
    c.name: c
    for c in (
        StrategyCaps("fedavg", individual_updates=False),
        StrategyCaps("fedprox", individual_updates=False),
        StrategyCaps("fedavgm", individual_updates=False),
        StrategyCaps("fedadam", individual_updates=False),
        StrategyCaps("fedyogi", individual_updates=False),
        StrategyCaps("fedadagrad", individual_updates=False),
        StrategyCaps("fedmedian", individual_updates=True, robust=True),
        StrategyCaps("fedtrimmedavg", individual_updates=True, robust=True),
        StrategyCaps("krum", individual_updates=True, robust=True),
        StrategyCaps("multikrum", individual_updates=True, robust=True),
        StrategyCaps("qfedavg", individual_updates=True, private_statistics=True),
        StrategyCaps("scaffold", individual_updates=False, server_tensors=True, private_statistics=True),
    )
}
STRATEGY_NAMES: tuple[str, ...] = tuple(sorted(STRATEGY_CAPS))


def caps(name: str) -> StrategyCaps:
    """The capabilities of strategy ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the choices).
    """
    try:
        return STRATEGY_CAPS[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGY_NAMES)}") from None


def names_where(flag: str) -> list[str]:
    """Sorted names of the strategies whose capability ``flag`` (e.g. ``"secure_sum"``) is true."""
    return [n for n in STRATEGY_NAMES if getattr(STRATEGY_CAPS[n], flag)]


def capability_table() -> str:
    """A Markdown table of every strategy's capabilities (for the docs; a test keeps the README's copy current)."""
    flags = ("secure_sum", "client_dp", "sample_dp", "sites", "robust")
    rows = ["| strategy | " + " | ".join(f.replace("_", " ") for f in flags) + " |", "|---" * (len(flags) + 1) + "|"]
    for name in STRATEGY_NAMES:
        c = STRATEGY_CAPS[name]
        rows.append(f"| {name} | " + " | ".join("yes" if getattr(c, f) else "–" for f in flags) + " |")
    return "\n".join(rows)
