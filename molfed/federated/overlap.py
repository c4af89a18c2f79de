"""Scaffold overlap between partners without showing anyone's scaffolds to the coordinator.

Protocol: partners share a consortium secret (the *salt*) that the coordinator never holds. Each partner sends
the set of ``HMAC-SHA256(salt, murcko_scaffold)`` digests of its ring scaffolds; the coordinator intersects the
sets and logs only counts and Jaccard indices (:func:`overlap_metrics`), never the digests themselves.

Why a keyed hash: ring scaffolds are few and guessable, so a plain hash could be reversed by hashing a scaffold
dictionary; without the salt the coordinator cannot test guesses. What it still learns is which partners share
*some* scaffold, and how many: exactly the overlap statistic. Limits: a coordinator colluding with one partner gets
the salt and can then test guesses against every partner's digests (a private-set-intersection-cardinality
protocol would close that); and very small sets make the counts themselves telling.

In local mode (a simulation: every partner in one process) the salt is :func:`local_salt`, a per-process random
secret held on the partner side of the code, or ``$MOLFED_CONSORTIUM_SECRET`` when set. Sites mode does not
collect digests yet (it needs a shared secret in each site config and a partner-job action).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

_SECRET_ENV = "MOLFED_CONSORTIUM_SECRET"
_PROCESS_SALT = secrets.token_bytes(32)


def local_salt() -> bytes:
    """Partner-side salt in local mode: ``$MOLFED_CONSORTIUM_SECRET`` if set, else a random per-process secret."""
    secret = os.environ.get(_SECRET_ENV)
    return hashlib.sha256(secret.encode()).digest() if secret else _PROCESS_SALT


def scaffold_digests(scaffolds: Iterable[str | None], salt: bytes) -> frozenset[str]:
    """Partner side: keyed digests of the distinct non-empty scaffolds (acyclic molecules have none).

    Raises
    ------
    ValueError
        If ``salt`` is shorter than 16 bytes (a short key could be guessed).
    """
    if len(salt) < 16:
        raise ValueError(f"got a {len(salt)}-byte salt, expected at least 16 bytes")
    return frozenset(hmac.new(salt, s.encode(), hashlib.sha256).hexdigest() for s in set(scaffolds) if s)


@dataclass(frozen=True, slots=True)
class Overlap:
    """Scaffold overlap between partners: counts only."""

    counts: dict[str, int]
    """Partner -> distinct ring scaffolds."""
    shared: dict[tuple[str, str], int]
    """``(a, b)`` with ``a < b`` -> scaffolds both hold."""
    jaccard: dict[tuple[str, str], float]
    """``(a, b)`` with ``a < b`` -> shared / union (0 when both are empty)."""


def overlap(digests: Mapping[str, Collection[str]]) -> Overlap:
    """Coordinator side: intersect the partners' digest sets; the result holds counts, never digests."""
    shared, jaccard = {}, {}
    for a, b in combinations(sorted(digests), 2):
        sa, sb = set(digests[a]), set(digests[b])
        union = len(sa | sb)
        shared[(a, b)] = len(sa & sb)
        jaccard[(a, b)] = shared[(a, b)] / union if union else 0.0
    return Overlap({p: len(d) for p, d in digests.items()}, shared, jaccard)


def overlap_metrics(stats: Overlap) -> dict[str, float]:
    """``scaffolds.count.<p>``, ``scaffolds.shared.<a>.<b>`` and ``scaffolds.jaccard.<a>.<b>`` (``a < b``)."""
    out = {f"scaffolds.count.{p}": float(n) for p, n in stats.counts.items()}
    for (a, b), n in stats.shared.items():
        out[f"scaffolds.shared.{a}.{b}"] = float(n)
        out[f"scaffolds.jaccard.{a}.{b}"] = stats.jaccard[(a, b)]
    return out
