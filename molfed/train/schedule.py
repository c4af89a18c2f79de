"""The local learning rate across federated rounds (and the baselines' rounds, which follow the same schedule).

A round's local optimizer starts afresh each round, so the schedule is a function of the round alone: partners
compute it from the round number the coordinator sends, a resumed run continues it exactly, and a baseline's round
``r`` trains at the federation's round-``r`` rate.

- ``constant``: the configured rate every round.
- ``cosine``: after ``warmup_rounds`` rounds rising linearly to the configured rate, half a cosine from the rate down
  to :data:`FLOOR` times it at the last round. Late rounds then take small steps around the consensus instead of
  drifting towards each partner's own optimum, which is where non-IID partners lose to pooled training.
"""

from __future__ import annotations

import math

__all__ = ["FLOOR", "SCHEDULES", "lr_factor"]

SCHEDULES = ("constant", "cosine")
FLOOR = 0.1
"""The cosine schedule's last-round rate, as a fraction of the configured rate."""


def lr_factor(schedule: str, server_round: int, rounds: int, warmup_rounds: int = 0) -> float:
    """Multiplier of the configured learning rate in round ``server_round`` (1-based) of ``rounds``.

    Rounds before 1 count as round 1 and rounds past ``rounds`` as the last (a schedule never extrapolates).

    Raises
    ------
    ValueError
        For an unknown ``schedule``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose from {list(SCHEDULES)}")
    rounds = max(1, rounds)
    r = min(max(1, server_round), rounds)
    warmup = min(max(0, warmup_rounds), rounds - 1)
    if r <= warmup:
        return r / (warmup + 1)
    if schedule == "constant":
        return 1.0
    span = rounds - warmup - 1
    t = (r - warmup - 1) / span if span > 0 else 0.0
    return FLOOR + (1.0 - FLOOR) * 0.5 * (1.0 + math.cos(math.pi * t))
