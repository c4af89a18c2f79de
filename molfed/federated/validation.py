"""Screening updates by what they would do to the global model, beyond the shared compatibility guard.

:func:`validate_update_deltas` first applies :func:`molfed.federated.strategies.validate_updates` (names, shapes,
dtype, NaN/inf, sample count), then looks at each update's delta ``d_k = w_k - w_global``:

- an absolute L2 bound: ``||d_k|| > max_delta_norm`` is rejected (a blown-up or scaled update);
- a relative bound: ``||d_k|| > max_norm_ratio * median_j ||d_j||`` is rejected (an outlier for this round);
- a direction check: ``cos(d_k, coordinate-wise median of the d_j) < min_cosine`` is rejected (e.g. a sign-flipped
  update, whose norm is unremarkable).

The relative and direction checks need a reference made by honest partners, so they run only with at least
``min_reference`` compatible updates (default 3) and assume a majority is honest. Every check is off unless
configured. None of them can run under secure aggregation, where individual updates are never seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from molfed.federated.strategies import validate_updates
from molfed.federated.types import Failure, Update, Weights


@dataclass(frozen=True, slots=True)
class ValidationResult:
    accepted: tuple[Update, ...]
    """Updates that passed every configured check, in input order."""
    rejected: tuple[Failure, ...]
    """Rejected partners with reasons (``"update rejected: ..."``), in input order."""
    delta_norms: Mapping[str, float]
    """L2 norm of each compatible update's delta, by partner (a round metric)."""


def delta_vector(current: Weights, weights: Weights) -> np.ndarray:
    """``weights - current`` flattened in sorted tensor-name order, float64, shape ``(P,)``."""
    return np.concatenate(
        [(np.asarray(weights[n], np.float64) - np.asarray(current[n], np.float64)).ravel() for n in sorted(current)]
    )


def validate_update_deltas(
    current: Weights,
    updates: Sequence[Update],
    *,
    max_delta_norm: float | None = None,
    max_norm_ratio: float | None = None,
    min_cosine: float | None = None,
    min_reference: int = 3,
) -> ValidationResult:
    """Split ``updates`` into accepted and rejected (with reasons). Pure; never raises on bad updates.

    Parameters
    ----------
    current
        This round's global weights.
    max_delta_norm
        Absolute bound on ``||w_k - current||_2`` over all tensors.
    max_norm_ratio
        Reject deltas longer than this multiple of the round's median delta norm (e.g. 5.0).
    min_cosine
        Reject deltas whose cosine similarity with the coordinate-wise median delta is below this (e.g. 0.0).
    min_reference
        Fewest compatible updates for the relative and direction checks to run.

    Raises
    ------
    ValueError
        If a bound is not positive, ``min_cosine`` is outside [-1, 1] or ``min_reference < 2``.
    """
    for label, bound in (("max_delta_norm", max_delta_norm), ("max_norm_ratio", max_norm_ratio)):
        if bound is not None and not bound > 0:
            raise ValueError(f"got {label}={bound}, expected > 0")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise ValueError(f"got min_cosine={min_cosine}, expected within [-1, 1]")
    if min_reference < 2:
        raise ValueError(f"got min_reference={min_reference}, expected >= 2")

    compatible, failures = validate_updates(current, updates, (), min_partners=0)
    failed = iter(failures)  # validate_updates keeps input order
    ok = {id(u) for u in compatible}
    reasons: list[str | None] = [None if id(u) in ok else next(failed).reason for u in updates]
    deltas = {i: delta_vector(current, u.weights) for i, u in enumerate(updates) if reasons[i] is None}
    norms = {i: float(np.linalg.norm(d)) for i, d in deltas.items()}
    with_reference = len(deltas) >= min_reference

    median_norm = float(np.median(list(norms.values()))) if norms else 0.0
    median_delta = np.median(np.stack(list(deltas.values())), axis=0) if with_reference else None
    for i, delta in deltas.items():
        norm = norms[i]
        if max_delta_norm is not None and norm > max_delta_norm:
            reasons[i] = f"update rejected: delta L2 norm {norm:.4g} exceeds the bound {max_delta_norm:.4g}"
        elif max_norm_ratio is not None and with_reference and norm > max_norm_ratio * median_norm:
            reasons[i] = (
                f"update rejected: delta L2 norm {norm:.4g} is {norm / median_norm:.3g}x this round's median "
                f"{median_norm:.4g} (limit {max_norm_ratio:g}x)"
            )
        elif min_cosine is not None and median_delta is not None:
            cosine = _cosine(delta, median_delta)
            if cosine < min_cosine:
                reasons[i] = (
                    f"update rejected: delta points away from this round's median delta "
                    f"(cosine {cosine:.3f} < {min_cosine:g})"
                )

    accepted = tuple(u for u, reason in zip(updates, reasons, strict=True) if reason is None)
    rejected = tuple(Failure(u.partner, r) for u, r in zip(updates, reasons, strict=True) if r is not None)
    return ValidationResult(accepted, rejected, {updates[i].partner: n for i, n in norms.items()})


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 1.0
