"""What each aggregation strategy can do, as its class declares it (``caps``), read from the one registry
(:data:`molfed.federated.strategies.STRATEGIES`) without torch.

Config validation (secure aggregation, privacy modes, sites mode), the secure-aggregation check, the DP wrappers
and the docs table (:func:`capability_table`) ask here.
"""

from __future__ import annotations

from molfed.federated.strategies import STRATEGIES
from molfed.federated.strategy_base import StrategyCaps


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy name, sorted."""
    return tuple(sorted(STRATEGIES))


STRATEGY_NAMES: tuple[str, ...] = strategy_names()
"""The names registered at import (a strategy registered later is seen by :func:`strategy_names` and :func:`caps`)."""


def caps(name: str) -> StrategyCaps:
    """The capabilities of strategy ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the choices).
    """
    try:
        return STRATEGIES[name].caps
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(strategy_names())}") from None


def names_where(flag: str) -> list[str]:
    """Sorted names of the strategies whose capability ``flag`` (e.g. ``"secure_sum"``) is true."""
    return [n for n in strategy_names() if getattr(caps(n), flag)]


def capability_table() -> str:
    """A Markdown table of every strategy's capabilities (a test keeps docs/user-guide.md's copy current)."""
    flags = ("secure_sum", "client_dp", "sample_dp", "sites", "robust")
    rows = ["| strategy | " + " | ".join(f.replace("_", " ") for f in flags) + " |", "|---" * (len(flags) + 1) + "|"]
    for name in strategy_names():
        c = caps(name)
        rows.append(f"| {name} | " + " | ".join("yes" if getattr(c, f) else "–" for f in flags) + " |")
    return "\n".join(rows)
