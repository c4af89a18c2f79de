"""Aggregation strategies, chosen by name from :data:`STRATEGIES` with :func:`build_strategy`.

Every strategy passes its updates through the one shared guard
(:func:`~molfed.federated.strategy_base.validate_updates`) and then calls one pure function of
:mod:`molfed.federated.aggregate`. What partners do beyond training and returning weights and ``n_samples``
(the flow passes these through unchanged; key names are constants in :mod:`molfed.federated.types`):

- fedprox: receives ``fit_options["proximal_mu"]`` and adds the proximal term to its local loss.
- qfedavg: receives ``fit_options["report_loss_before"] = 1`` and returns ``metrics["loss_before"]``, the received
  model's loss on its training split.
- scaffold: receives ``fit_tensors["scaffold_c"]``, keeps its own ``c_i`` in its workspace between rounds,
  corrects local gradients by ``c - c_i`` and returns ``extras["scaffold_delta_c"]``.
- all others: nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from molfed.federated import aggregate as agg
from molfed.federated.strategy_base import RoundOutcome, Strategy, arrays, validate_updates
from molfed.federated.types import (
    LOSS_BEFORE,
    PROXIMAL_MU,
    REPORT_LOSS_BEFORE,
    SCAFFOLD_C,
    SCAFFOLD_DELTA_C,
    QuorumError,
    Update,
    Weights,
)

__all__ = ["STRATEGIES", "QuorumError", "RoundOutcome", "Strategy", "build_strategy", "validate_updates"]


def _pairs(updates: Sequence[Update]) -> list[tuple[Weights, int]]:
    return [(u.weights, u.n_samples) for u in updates]


class FedAvg(Strategy):
    """Federated averaging weighted by training-sample counts (McMahan et al. 2017)."""

    name = "fedavg"

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        return agg.fedavg(_pairs(updates))


class FedProx(FedAvg):
    """FedAvg aggregation; partners add ``mu/2 ||w - w_global||^2`` to their local loss (Li et al. 2020)."""

    name = "fedprox"
    defaults = {"proximal_mu": 0.01}

    def check_options(self) -> None:
        self._require("proximal_mu", self.options["proximal_mu"] >= 0, ">= 0")

    def fit_options(self, server_round: int) -> dict[str, float]:
        return {PROXIMAL_MU: self.options["proximal_mu"]}


class FedAvgM(Strategy):
    """FedAvg with server momentum (Hsu et al. 2019) on the round's move ``avg - x``.

    Defaults ``server_lr = 1``, ``momentum = 0.9``: the first round is FedAvg's; later steps carry momentum
    (effective step up to ``server_lr / (1 - momentum)``).
    """

    name = "fedavgm"
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
        step = agg.delta(current, agg.fedavg(_pairs(updates)))
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
        step = agg.delta(current, agg.fedavg(_pairs(updates)))
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


class FedMedian(Strategy):
    """Coordinate-wise median of the updates, unweighted (Yin et al. 2018)."""

    name = "fedmedian"

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        return agg.coordinate_median([u.weights for u in updates])


class FedTrimmedAvg(Strategy):
    """Coordinate-wise mean without the ``floor(beta K)`` highest and lowest values, unweighted (Yin et al. 2018).

    With fewer than ``1 / beta`` partners nothing is trimmed (3 partners, beta 0.2: the plain unweighted mean).
    """

    name = "fedtrimmedavg"
    defaults = {"beta": 0.2}

    def check_options(self) -> None:
        self._require("beta", 0 <= self.options["beta"] < 0.5, "0 <= beta < 0.5")

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        return agg.trimmed_mean([u.weights for u in updates], self.options["beta"])


class Krum(Strategy):
    """Krum (Blanchard et al. 2017): the one update closest to its ``K - f - 2`` nearest others, ``f = byzantine``.

    The guarantee needs ``K >= 2f + 3`` partners; with fewer, at least one neighbour is still used.
    """

    name = "krum"
    defaults = {"byzantine": 1.0}

    def check_options(self) -> None:
        self._int_option("byzantine", 0)

    def selected(self, n_updates: int) -> int:
        return 1

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        f = self._int_option("byzantine", 0)
        return agg.krum(_pairs(updates), byzantine=f, selected=self.selected(len(updates)))


class MultiKrum(Krum):
    """Multi-Krum: the sample-weighted mean of the ``selected`` best-scored updates (0: ``K - byzantine``)."""

    name = "multikrum"
    defaults = {"byzantine": 1.0, "selected": 0.0}

    def check_options(self) -> None:
        super().check_options()
        self._int_option("selected", 0)

    def selected(self, n_updates: int) -> int:
        m = self._int_option("selected", 0)
        return m if m > 0 else max(n_updates - self._int_option("byzantine", 0), 1)


class QFedAvg(Strategy):
    """q-FedAvg (Li et al. 2020, q-FFL): partners with a higher loss of the received model weigh more.

    Partners report ``metrics["loss_before"]``. ``lipschitz`` is the paper's ``L = 1 / local SGD lr``; with Adam
    as local optimizer that equivalence does not hold, and the default 1.0 is a damping constant. ``q = 0`` is the
    unweighted mean of the local models.
    """

    name = "qfedavg"
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


class Scaffold(Strategy):
    """SCAFFOLD (Karimireddy et al. 2020) with control variates.

    The server sends ``c`` (``fit_tensors["scaffold_c"]``); each partner corrects every local gradient by
    ``c - c_i``, keeps ``c_i`` in its workspace between rounds and returns ``c_i+ - c_i``
    (``extras["scaffold_delta_c"]``). The server averages models sample-weighted (``server_lr`` 1: FedAvg's
    average) and moves ``c`` by ``|S| / N`` times the mean delta, ``N`` = partners invited this round.
    """

    name = "scaffold"
    defaults = {"server_lr": 1.0}
    required_extras = (SCAFFOLD_DELTA_C,)

    def __init__(self, **options: float) -> None:
        super().__init__(**options)
        self.control: dict[str, np.ndarray] | None = None

    def check_options(self) -> None:
        self._require("server_lr", self.options["server_lr"] > 0, "> 0")

    def fit_tensors(self, server_round: int, current: Weights) -> dict[str, dict[str, np.ndarray]]:
        if self.control is None:
            return {SCAFFOLD_C: {n: np.zeros(np.shape(a), np.float32) for n, a in current.items()}}
        return {SCAFFOLD_C: {n: a.astype(np.float32) for n, a in self.control.items()}}

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        weights, self.control = agg.scaffold_server(
            current,
            _pairs(updates),
            [u.extras[SCAFFOLD_DELTA_C] for u in updates],
            self.control,
            server_lr=self.options["server_lr"],
            participation=len(updates) / max(invited, len(updates)),
        )
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {} if self.control is None else {"control": arrays(self.control)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state_keys(state, ("control",))
        self.control = arrays(state.get("control"))


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedProx,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAdagrad,
        FedMedian,
        FedTrimmedAvg,
        Krum,
        MultiKrum,
        QFedAvg,
        Scaffold,
    )
}


def build_strategy(name: str, **options: float) -> Strategy:
    """Instantiate a registered strategy with its options (see each class's ``defaults``).

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the choices) or an option is unknown or invalid (the
        message lists the valid options).
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}") from None
    return cls(**options)
