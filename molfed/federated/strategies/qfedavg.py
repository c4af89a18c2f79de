"""q-FedAvg (Li et al. 2020, q-FFL): fairer models by weighing partners with a higher loss more."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from molfed.federated import aggregate as agg
from molfed.federated.strategy_base import Strategy, StrategyCaps
from molfed.federated.types import LOSS_BEFORE, REPORT_LOSS_BEFORE, Update, Weights


class QFedAvg(Strategy):
    """q-FedAvg (Li et al. 2020, q-FFL): partners with a higher loss of the received model weigh more.

    Partners report ``metrics["loss_before"]``. ``lipschitz`` is the paper's ``L = 1 / local SGD lr``; with Adam
    as local optimizer that equivalence does not hold, and the default 1.0 is a damping constant. ``q = 0`` is the
    unweighted mean of the local models.
    """

    name = "qfedavg"
    caps = StrategyCaps(individual_updates=True, private_statistics=True)
    defaults = {"q": 0.2, "lipschitz": 1.0}
    required_metrics = (LOSS_BEFORE,)

    def check_options(self) -> None:
        self._require("q", self.options["q"] >= 0, ">= 0")
        self._require("lipschitz", self.options["lipschitz"] > 0, "> 0")

    def fit_options(self, server_round: int) -> dict[str, float]:
        return {REPORT_LOSS_BEFORE: 1.0}

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        results = [(u.weights, float(u.metrics[LOSS_BEFORE])) for u in updates]
        return agg.qfedavg(current, results, q=self.options["q"], lipschitz=self.options["lipschitz"])
