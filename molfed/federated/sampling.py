"""Which partners a round asks to train, and how many successful updates the round then needs.

Policy (documented in docs/user-guide.md):

* A round asks ``k = min(n, max(ceil(fraction_fit * n), min_fit_partners))`` of the ``n`` ready partners, drawn
  without replacement with a seed derived from the run's seed and the round number alone, so the same config
  samples the same partners in every run (and a resumed run re-draws the same ones).
* The quorum applies to the sampled set: the round needs ``min_partners`` usable updates from its ``k`` sampled
  partners (all ``k`` when ``min_partners`` is unset). Partners that were not asked are neither failures nor
  counted in ``partners_failed``.
* Config validation refuses a quorum larger than the guaranteed sample size (every round would fail).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def sample_size(n_partners: int, fraction_fit: float, min_fit_partners: int) -> int:
    """Partners asked per round: ``min(n, max(ceil(fraction_fit * n), min_fit_partners))``.

    Raises
    ------
    ValueError
        If ``n_partners < 1``, ``fraction_fit`` is not in (0, 1] or ``min_fit_partners < 1``.
    """
    if n_partners < 1:
        raise ValueError(f"got n_partners={n_partners}, expected >= 1")
    if not 0.0 < fraction_fit <= 1.0:
        raise ValueError(f"got fraction_fit={fraction_fit}, expected 0 < fraction_fit <= 1")
    if min_fit_partners < 1:
        raise ValueError(f"got min_fit_partners={min_fit_partners}, expected >= 1")
    # round() first: 0.6 * 5 is 3.0000000000000004 in floating point, whose ceil would ask one partner too many
    wanted = math.ceil(round(fraction_fit * n_partners, 9))
    return min(n_partners, max(wanted, min_fit_partners))


def sample_partners(
    names: Sequence[str], server_round: int, *, seed: int, fraction_fit: float = 1.0, min_fit_partners: int = 1
) -> list[str]:
    """The partners asked in ``server_round``, in the order of ``names``.

    Deterministic in ``(seed, server_round, set(names))``: the draw does not depend on the order of ``names``.
    With ``fraction_fit = 1`` every partner is asked (no draw).

    Raises
    ------
    ValueError
        As :func:`sample_size`, or if ``names`` holds duplicates.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"got duplicate partner names in {list(names)}")
    k = sample_size(len(names), fraction_fit, min_fit_partners)
    if k == len(names):
        return list(names)
    from molfed.federated.partner import derive_seed  # torch-heavy module; config validation imports this one

    rng = np.random.default_rng(derive_seed(seed, "sample", server_round))
    chosen = {sorted(names)[i] for i in rng.choice(len(names), size=k, replace=False)}
    return [n for n in names if n in chosen]


def round_quorum(n_sampled: int, min_partners: int | None) -> int:
    """Usable updates a round needs from its ``n_sampled`` partners: ``min_partners``, or all when unset."""
    return n_sampled if min_partners is None else min_partners
