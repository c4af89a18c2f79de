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
    """Aggregate training metrics, e.g. ``{"train_loss": 0.41}``."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A partner that did not deliver a usable update this round, and why (no data in the reason)."""

    partner: str
    reason: str


class QuorumError(RuntimeError):
    """Fewer usable updates than the configured quorum."""
