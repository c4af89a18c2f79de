"""Byzantine-robust aggregation: coordinate-wise median and trimmed mean (Yin et al. 2018), Krum and Multi-Krum
(Blanchard et al. 2017). Each looks at every partner's update, so none runs on a secure sum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from molfed.federated import aggregate as agg
from molfed.federated.strategy_base import Strategy, StrategyCaps, sample_weighted
from molfed.federated.types import Update, Weights


class FedMedian(Strategy):
    """Coordinate-wise median of the updates, unweighted (Yin et al. 2018)."""

    name = "fedmedian"
    caps = StrategyCaps(individual_updates=True, robust=True)

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        return agg.coordinate_median([u.weights for u in updates])


class FedTrimmedAvg(Strategy):
    """Coordinate-wise mean without the ``floor(beta K)`` highest and lowest values, unweighted (Yin et al. 2018).

    With fewer than ``1 / beta`` partners nothing is trimmed (3 partners, beta 0.2: the plain unweighted mean).
    """

    name = "fedtrimmedavg"
    caps = StrategyCaps(individual_updates=True, robust=True)
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
    caps = StrategyCaps(individual_updates=True, robust=True)
    defaults = {"byzantine": 1.0}

    def check_options(self) -> None:
        self._int_option("byzantine", 0)

    def selected(self, n_updates: int) -> int:
        return 1

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        f = self._int_option("byzantine", 0)
        return agg.krum(sample_weighted(updates), byzantine=f, selected=self.selected(len(updates)))


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
