"""Federated averaging (McMahan et al. 2017) and FedProx (Li et al. 2020): the sample-weighted mean of the
partners' models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from molfed.federated import aggregate as agg
from molfed.federated.strategy_base import Strategy, StrategyCaps, sample_weighted
from molfed.federated.types import PROXIMAL_MU, Update, Weights


class FedAvg(Strategy):
    """Federated averaging weighted by training-sample counts (McMahan et al. 2017)."""

    name = "fedavg"
    caps = StrategyCaps(individual_updates=False)

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        return agg.fedavg(sample_weighted(updates))


class FedProx(FedAvg):
    """FedAvg aggregation; partners add ``mu/2 ||w - w_global||^2`` to their local loss (Li et al. 2020)."""

    name = "fedprox"
    caps = StrategyCaps(individual_updates=False)
    defaults = {"proximal_mu": 0.01}

    def check_options(self) -> None:
        self._require("proximal_mu", self.options["proximal_mu"] >= 0, ">= 0")

    def fit_options(self, server_round: int) -> dict[str, float]:
        return {PROXIMAL_MU: self.options["proximal_mu"]}
