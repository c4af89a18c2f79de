"""The value of federation per partner: gain over training alone, fairness across partners, and the
leave-one-partner-out contribution estimate. Pure functions of per-partner test metrics (aggregates only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from molfed.federated.coordinator import combine_partners, spread
from molfed.train.metrics import higher_is_better

#: ``test[partner][kind][metric]``: each partner's test metrics per model kind (federated, local-only, pooled).
TestMetrics = Mapping[str, Mapping[str, Mapping[str, float]]]


def improvement(value: float | None, reference: float | None, metric: str) -> float | None:
    """Relative improvement of ``value`` over ``reference`` (+0.1 = 10 % better, whichever way ``metric`` points);
    None if either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    gain = (reference - value) / abs(reference)
    return -gain if higher_is_better(metric) else gain


def fairness(test: TestMetrics, metric: str, kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per model kind: ``worst`` partner's test ``metric`` and the ``std`` over partners (:func:`spread`).

    A kind is left out unless every partner has the metric for it (a partial spread would mislead).
    """
    out = {}
    for kind in kinds:
        values = [by_kind.get(kind, {}).get(metric) for by_kind in test.values()]
        if values and all(v is not None for v in values):
            out[kind] = spread([float(v) for v in values if v is not None], metric)
    return out


def contributions(
    full: Mapping[str, float],
    without: Mapping[str, Mapping[str, float]],
    metric: str,
    sizes: Mapping[str, int],
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Leave-one-partner-out contributions, signed so that positive means "partner k's participation helped".

    Parameters
    ----------
    full
        ``{partner j: test metric of the federation of all partners}``.
    without
        ``{partner k: {partner j: test metric of the federation without k}}`` for j != k.
    metric, sizes
        The metric's name (sets the sign) and test-split sizes (to combine over the other partners).

    Returns
    -------
    ``(pairwise, overall)``: ``pairwise[k][j] = metric_j(without k) - metric_j(all)`` for RMSE-like metrics
    (``metric_j(all) - metric_j(without k)`` for higher-is-better ones), and ``overall[k]``, the same difference
    of the metric combined over all other partners' test splits (:func:`combine_partners`).
    """
    sign = -1.0 if higher_is_better(metric) else 1.0
    pairwise: dict[str, dict[str, float]] = {}
    overall: dict[str, float] = {}
    for k, others in without.items():
        common = [j for j in others if j != k and j in full]
        pairwise[k] = {j: sign * (others[j] - full[j]) for j in common}
        alone = combine_partners({j: {metric: others[j]} for j in common}, sizes).get(metric)
        together = combine_partners({j: {metric: full[j]} for j in common}, sizes).get(metric)
        if alone is not None and together is not None:  # None: no other partner, or no test molecules
            overall[k] = sign * (alone - together)
    return pairwise, overall
