"""Server optimizers on the round's move ``avg - x``: FedAvgM (Hsu et al. 2019), FedAdam, FedYogi and FedAdagrad
(Reddi et al. 2021)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from molfed.federated import aggregate as agg
from molfed.federated.strategy_base import Strategy, StrategyCaps, arrays, sample_weighted
from molfed.federated.types import Update, Weights


class FedAvgM(Strategy):
    """FedAvg with server momentum (Hsu et al. 2019) on the round's move ``avg - x``.

    Defaults ``server_lr = 1``, ``momentum = 0.9``: the first round is FedAvg's; later steps carry momentum
    (effective step up to ``server_lr / (1 - momentum)``).
    """

    name = "fedavgm"
    caps = StrategyCaps(individual_updates=False)
    defaults = {"server_lr": 1.0, "momentum": 0.9}

    def __init__(self, **options: float) -> None:
        super().__init__(**options)
        self.velocity: dict[str, np.ndarray] | None = None

    def check_options(self) -> None:
        self._require("server_lr", self.options["server_lr"] > 0, "> 0")
        self._require("momentum", 0 <= self.options["momentum"] < 1, "0 <= momentum < 1")

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        step = agg.delta(current, agg.fedavg(sample_weighted(updates)))
        weights, self.velocity = agg.momentum_step(
            current, step, self.velocity, server_lr=self.options["server_lr"], momentum=self.options["momentum"]
        )
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {} if self.velocity is None else {"velocity": arrays(self.velocity)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state_keys(state, ("velocity",))
        self.velocity = arrays(state.get("velocity"))


class FedAdam(Strategy):
    """Adaptive server optimizer on the round's move (Reddi et al. 2021): FedAdam; see :func:`~molfed.federated.
    aggregate.adaptive_step`. Updates identical to ``current`` leave it unchanged; otherwise the first step is
    ``server_lr * m / (sqrt(v) + tau)``, not the average itself."""

    name = "fedadam"
    caps = StrategyCaps(individual_updates=False)
    rule: ClassVar[str] = "adam"
    defaults = {"server_lr": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}

    def __init__(self, **options: float) -> None:
        super().__init__(**options)
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def check_options(self) -> None:
        self._require("server_lr", self.options["server_lr"] > 0, "> 0")
        self._require("beta_1", 0 <= self.options["beta_1"] < 1, "0 <= beta_1 < 1")
        self._require("beta_2", 0 <= self.options["beta_2"] < 1, "0 <= beta_2 < 1")
        self._require("tau", self.options["tau"] > 0, "> 0")

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        step = agg.delta(current, agg.fedavg(sample_weighted(updates)))
        o = self.options
        weights, self.m, self.v = agg.adaptive_step(
            current,
            step,
            self.m,
            self.v,
            rule=self.rule,
            server_lr=o["server_lr"],
            beta_1=o["beta_1"],
            beta_2=o["beta_2"],
            tau=o["tau"],
        )
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {} if self.m is None else {"m": arrays(self.m), "v": arrays(self.v)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state_keys(state, ("m", "v"))
        self.m, self.v = arrays(state.get("m")), arrays(state.get("v"))


class FedYogi(FedAdam):
    """FedYogi (Reddi et al. 2021): FedAdam with Yogi's additive second-moment update."""

    name = "fedyogi"
    rule = "yogi"


class FedAdagrad(FedAdam):
    """FedAdagrad (Reddi et al. 2021): accumulated second moments; ``beta_1 = 0`` by default (no momentum)."""

    name = "fedadagrad"
    rule = "adagrad"
    defaults = {"server_lr": 0.01, "beta_1": 0.0, "beta_2": 0.0, "tau": 1e-3}
