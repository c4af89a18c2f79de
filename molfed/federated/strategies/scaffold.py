"""SCAFFOLD (Karimireddy et al. 2020): control variates against client drift; the partner side is
:mod:`molfed.federated.scaffold`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from molfed.federated import aggregate as agg
from molfed.federated.strategy_base import Strategy, StrategyCaps, arrays, sample_weighted
from molfed.federated.types import SCAFFOLD_C, SCAFFOLD_DELTA_C, Update, Weights


class Scaffold(Strategy):
    """SCAFFOLD (Karimireddy et al. 2020) with control variates.

    The server sends ``c`` (``fit_tensors["scaffold_c"]``); each partner corrects every local gradient by
    ``c - c_i``, keeps ``c_i`` in its workspace between rounds and returns ``c_i+ - c_i``
    (``extras["scaffold_delta_c"]``). The server averages models sample-weighted (``server_lr`` 1: FedAvg's
    average) and moves ``c`` by ``|S| / N`` times the mean delta, ``N`` = partners invited this round.
    """

    name = "scaffold"
    caps = StrategyCaps(individual_updates=False, server_tensors=True, private_statistics=True)
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
            sample_weighted(updates),
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
