"""Shamir secret sharing (t of n) of 32-byte secrets over the prime field GF(2^521 - 1).

Textbook and information-theoretic: fewer than ``threshold`` shares say nothing about the secret. Coefficients come
from :mod:`secrets`. Shares are indexed by positive integers ``x`` (partner positions, 1-based).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

PRIME = 2**521 - 1
"""A Mersenne prime above every 32-byte secret."""
SHARE_BYTES = 66
"""Big-endian bytes of one share value (521 bits)."""


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Share ``secret`` at the points ``xs`` so that any ``threshold`` of them recover it.

    Raises
    ------
    ValueError
        If ``threshold`` is not in ``[1, len(xs)]`` or the points are not distinct positive integers.
    """
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"got threshold={threshold}, expected between 1 and {len(xs)} (the number of shares)")
    if len(set(xs)) != len(xs) or min(xs) < 1 or max(xs) >= PRIME:
        raise ValueError(f"share points must be distinct positive integers, got {sorted(xs)}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x) for x in xs}


def combine(shares: Mapping[int, int], threshold: int, *, length: int = 32) -> bytes:
    """Recover a ``length``-byte secret from at least ``threshold`` shares.

    Interpolates at zero from the first ``threshold`` points; every further share must lie on the same polynomial.

    Raises
    ------
    ValueError
        If fewer than ``threshold`` shares are given, or the shares are inconsistent (a wrong or tampered share).
    """
    if len(shares) < threshold:
        raise ValueError(f"got {len(shares)} shares, expected at least {threshold}")
    points = sorted(shares.items())
    basis, extra = points[:threshold], points[threshold:]
    for x, y in extra:
        if _interpolate(basis, x) != y % PRIME:
            raise ValueError("shares are inconsistent: they do not lie on one polynomial")
    value = _interpolate(basis, 0)
    if value >= 1 << (8 * length):
        raise ValueError(f"shares are inconsistent: recovered value does not fit in {length} bytes")
    return value.to_bytes(length, "big")


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for c in reversed(coefficients):
        result = (result * x + c) % PRIME
    return result


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """Lagrange interpolation of the polynomial through ``points``, evaluated at ``at``."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total
