"""Fixed-point encoding of sample-weighted weights over the ring Z_{2^64} (numpy ``uint64``, wrapping).

A partner encodes ``rint(n_k * w * scale)`` per coordinate as int64 two's complement viewed as uint64, in sorted
tensor-name order, and appends ``n_k``. Adding such vectors modulo 2^64 and reading the result back as int64 gives
``sum_k rint(n_k w_k scale)`` and ``N = sum_k n_k`` exactly, provided the true sum fits in int64; the per-partner
guard in :func:`encode` makes sure it does for up to ``max_partners`` partners.

Precision: each partner's coordinate is rounded by at most half a unit, so the decoded weighted sum is within
``K / (2 scale)`` of ``sum_k n_k w_k`` and the mean within ``K / (2 scale N) <= 1 / (2 scale)`` of FedAvg
(K partners, every ``n_k >= 1``), i.e. 7.6e-6 at the default scale 2^16, before the final float32 rounding.
This holds while ``|n_k w scale| < 2^53`` (float64 represents the product exactly enough to round correctly).
"""

from __future__ import annotations

import numpy as np

from molfed.federated.types import Weights

DEFAULT_SCALE = 2**16
"""Fixed-point scale: 16 fractional bits."""
RING = "Z_2^64"

Layout = tuple[tuple[str, tuple[int, ...]], ...]
"""Tensor names (sorted) and shapes: how a flat ring vector maps back to :data:`Weights`."""

_INT64_MAX = 2**63 - 1


def layout_of(weights: Weights) -> Layout:
    """Sorted ``(name, shape)`` pairs of ``weights``."""
    return tuple((name, tuple(int(d) for d in np.shape(weights[name]))) for name in sorted(weights))


def vector_length(layout: Layout) -> int:
    """Ring elements of an encoded update: every coordinate plus one for the sample count."""
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout) + 1


def encode(weights: Weights, n_samples: int, *, scale: int, max_partners: int) -> np.ndarray:
    """Encode ``n_samples * weights`` and ``n_samples`` as one uint64 vector of shape ``(P + 1,)``.

    Raises
    ------
    ValueError
        If ``n_samples < 1``, ``scale < 1`` or ``max_partners < 1``; if a tensor holds NaN/inf; or if
        ``|n_samples * value * scale|`` reaches ``(2^63 - 1) / max_partners``, the most each of ``max_partners``
        partners may contribute without the sum overflowing the ring. The message names the tensor and the
        limit, never the value (it may reach the coordinator).
    """
    if n_samples < 1:
        raise ValueError(f"got n_samples={n_samples}, expected >= 1")
    if scale < 1:
        raise ValueError(f"got scale={scale}, expected an integer >= 1")
    if max_partners < 1:
        raise ValueError(f"got max_partners={max_partners}, expected >= 1")
    limit = _INT64_MAX // max_partners
    if n_samples >= limit:
        raise ValueError(f"n_samples would overflow the ring {RING} summed over {max_partners} partners")
    parts = []
    for name, _ in layout_of(weights):
        values = np.asarray(weights[name], dtype=np.float64).ravel() * (float(n_samples) * scale)
        if not np.isfinite(values).all():
            raise ValueError(f"tensor {name!r}: contains NaN or infinite values")
        peak = float(np.abs(values).max()) if values.size else 0.0
        if peak >= limit:
            # the message travels to the coordinator: it must not say how large the values are
            raise ValueError(
                f"tensor {name!r}: |n_samples * value * scale| would overflow the ring {RING} summed over "
                f"{max_partners} partners (limit {limit:.3g} per partner); lower the fixed-point scale "
                "or check the update"
            )
        parts.append(np.rint(values).astype(np.int64))
    parts.append(np.array([n_samples], dtype=np.int64))
    return np.concatenate(parts).view(np.uint64)


def decode(total: np.ndarray, layout: Layout, *, scale: int) -> tuple[dict[str, np.ndarray], int]:
    """Read a ring sum back: ``(sum_k n_k w_k as float64 arrays by name, N = sum_k n_k)``.

    Raises
    ------
    ValueError
        If the length does not match ``layout`` or the decoded sample count is not positive (wrong masks or an
        overflow).
    """
    expected = vector_length(layout)
    if total.shape != (expected,):
        raise ValueError(f"got a vector of shape {total.shape}, expected ({expected},) for this layout")
    signed = np.asarray(total, dtype=np.uint64).view(np.int64)
    n_total = int(signed[-1])
    if n_total <= 0:
        raise ValueError(f"decoded total sample count {n_total}, expected > 0 (masks did not cancel?)")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = (signed[offset : offset + size].astype(np.float64) / scale).reshape(shape)
        offset += size
    return out, n_total
