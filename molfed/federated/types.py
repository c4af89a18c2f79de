"""Values that cross between partners and the coordinator: weights, updates, failures. Nothing else travels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: Model weights by parameter name; float32 arrays in the model's ``state_dict`` order.
Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Update:
    """One partner's contribution to a round."""

    partner: str
    weights: Weights
    """Locally trained weights, same names and shapes as the global model."""
    n_samples: int
    """Training molecules the update was computed on (FedAvg weight)."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Aggregate training metrics, e.g. ``{"train_loss": 0.41}``; q-FedAvg also needs ``"loss_before"`` (the
    received global model's loss on the training split, before local training)."""
    extras: Mapping[str, Weights] = field(default_factory=dict)
    """Further weight-shaped tensors a strategy asked for, by name (same names and shapes as ``weights``), e.g.
    SCAFFOLD's control-variate delta ``{"scaffold_delta_c": ...}``; empty for FedAvg."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A partner that did not deliver a usable update this round, and why (no data in the reason)."""

    partner: str
    reason: str


class QuorumError(RuntimeError):
    """Fewer usable updates than the configured quorum."""


# Names on the wire between a strategy and partners' local training (see ``molfed.federated.partner.local_update``).
PROXIMAL_MU = "proximal_mu"
"""``fit_options`` key: FedProx's proximal coefficient mu (float, 0 disables)."""
REPORT_LOSS_BEFORE = "report_loss_before"
"""``fit_options`` key: 1.0 asks partners for ``Update.metrics[LOSS_BEFORE]`` (q-FedAvg)."""
LOSS_BEFORE = "loss_before"
"""``Update.metrics`` key: the received global model's loss on the partner's training split, before training."""
SCAFFOLD_C = "scaffold_c"
"""``fit_tensors`` key: SCAFFOLD's server control variate ``c`` (weight-shaped)."""
SCAFFOLD_DELTA_C = "scaffold_delta_c"
"""``Update.extras`` key: the partner's control-variate change ``c_i+ - c_i`` (weight-shaped)."""


def check_compatible(reference: Weights, candidate: Weights) -> str | None:
    """Return why ``candidate`` cannot stand in for ``reference`` (names, shapes, dtype, finiteness), or None."""
    missing = sorted(set(reference) - set(candidate))
    extra = sorted(set(candidate) - set(reference))
    if missing or extra:
        return f"tensor names differ: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, ref in reference.items():
        arr = np.asarray(candidate[name])
        if arr.shape != ref.shape:
            return f"tensor {name!r}: got shape {arr.shape}, expected {ref.shape}"
        if not np.issubdtype(arr.dtype, np.floating):
            return f"tensor {name!r}: got dtype {arr.dtype}, expected a floating type"
        if not np.isfinite(arr).all():
            return f"tensor {name!r}: contains NaN or infinite values"
    return None
