"""A bare in-process federation: the same molfed functions as the Prefect flow, without Prefect or MLflow.

Used by the learning test, the poisoning drills and as the reference loop of the orchestration-overhead benchmark.
For integrity the loop takes the flow's own pieces: pass a :class:`~molfed.federated.integrity.GuardedStrategy` as
``strategy`` (signature checks, delta screening, secure aggregation) and a ``seal`` that does to each partner's update
what the partner does before it leaves (e.g. :func:`~molfed.federated.sealing.seal_update`, or an attack).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molfed.chem.standardize import StandardizeOptions
from molfed.federated import partner as p
from molfed.federated.strategies import Strategy
from molfed.federated.types import Update, Weights
from molfed.models.model import ModelSpec


@dataclass(frozen=True, slots=True)
class SimulationResult:
    weights: dict[str, np.ndarray]
    """Final global weights."""
    val_history: list[dict[str, dict[str, float]]]
    """Per round: ``{partner: validation metrics}`` of the aggregated model."""
    scaling: dict[str, list[float]]


def simulate(
    partners: Sequence[p.PartnerData],
    *,
    spec: ModelSpec,
    init_weights: dict[str, np.ndarray],
    strategy: Strategy,
    settings: p.TrainSettings,
    rounds: int,
    seed: int,
    state_key: str = "simulation",
    min_partners: int | None = None,
    seal: Callable[[Update, int, Weights], Update] | None = None,
) -> SimulationResult:
    """Run ``rounds`` of local training + aggregation + validation, sequentially, in this process.

    Every round passes the strategy's ``fit_options`` and ``fit_tensors``, the round number and ``state_key`` to
    :func:`~molfed.federated.partner.local_update` exactly as the flow does, so every registered strategy runs here;
    partner-side state (SCAFFOLD's ``c_i``) lives in each partner's ``workspace``. ``seal(update, round,
    global weights)`` is applied to each update as it leaves its partner; ``min_partners`` is the quorum (default:
    every partner).

    Raises
    ------
    QuorumError
        If a round has fewer usable updates than ``min_partners``.
    """
    scaling = p.combine_moments([p.partner_label_moments(d) for d in partners], len(spec.task_names))
    weights = init_weights
    history = []
    for r in range(1, rounds + 1):
        options, tensors = strategy.fit_options(r), strategy.fit_tensors(r, weights)
        updates = [
            p.local_update(
                d,
                spec=spec,
                weights=weights,
                scaling=scaling,
                settings=settings,
                seed=p.derive_seed(seed, "round", r, d.name),
                fit_options=options,
                fit_tensors=tensors,
                server_round=r,
                state_key=state_key,
            )
            for d in partners
        ]
        if seal is not None:
            updates = [seal(u, r, weights) for u in updates]
        quorum = len(partners) if min_partners is None else min_partners
        weights = strategy.run_round(r, weights, updates, min_partners=quorum).weights
        history.append(
            {d.name: p.evaluate_partner(d, spec=spec, weights=weights, scaling=scaling)["val"] for d in partners}
        )
    return SimulationResult(weights, history, scaling)


def prepare_demo_libraries(paths: Mapping[str, Path], workspace: Path, *, seed: int = 0) -> list[p.PartnerData]:
    """Prepare libraries written like the demo's (``smiles``, regression ``expt``) with default options, each in
    ``workspace/<name>``: the partners of benches and learning tests."""
    return [
        p.prepare_partner(
            name,
            path=path,
            workspace=workspace / name,
            smiles_column="smiles",
            label_columns=["expt"],
            task_types=["regression"],
            standardize=StandardizeOptions(),
            duplicates="merge",
            split_fractions=(0.8, 0.1, 0.1),
            seed=seed,
        )
        for name, path in paths.items()
    ]
