"""Aggregation strategies: the one registry (:data:`STRATEGIES`), chosen by name with :func:`build_strategy`.

Adding a strategy: one file in this package with a :class:`~molfed.federated.strategy_base.Strategy` subclass that
sets ``name``, ``caps`` (a :class:`~molfed.federated.strategy_base.StrategyCaps`: config validation, secure
aggregation, the DP wrappers, sites mode and the docs table read it) and ``defaults``, plus one line in
:data:`STRATEGIES` below. The contract tests (``tests/federated/test_strategies.py``) then run it.
The registry imports no torch: the config layer reads it.

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

from molfed.federated.strategies.fedavg import FedAvg, FedProx
from molfed.federated.strategies.qfedavg import QFedAvg
from molfed.federated.strategies.robust import FedMedian, FedTrimmedAvg, Krum, MultiKrum
from molfed.federated.strategies.scaffold import Scaffold
from molfed.federated.strategies.server_opt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from molfed.federated.strategy_base import RoundOutcome, Strategy, StrategyCaps, validate_updates
from molfed.federated.types import QuorumError

__all__ = [
    "STRATEGIES",
    "QuorumError",
    "RoundOutcome",
    "Strategy",
    "StrategyCaps",
    "build_strategy",
    "validate_updates",
]

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
"""Every strategy by name: the registry the config, the engine and the docs read."""


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
