"""Coordinator-side tasks: aggregation, the pooled baseline (simulation only) and MLflow logging."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task

from molfed.config import RunConfig
from molfed.federated import partner as p
from molfed.federated.strategies import RoundOutcome, Strategy
from molfed.federated.types import Failure, Update, Weights
from molfed.models.model import ModelSpec
from molfed.tracking import Tracker
from tasks._options import PRIVATE
from tasks.partner import partner_data, train_settings


@task(name="aggregate", task_run_name="aggregate-round-{server_round}", persist_result=False)
def aggregate(
    strategy: Strategy,
    server_round: int,
    weights: Weights,
    updates: Sequence[Update],
    failures: Sequence[Failure],
    min_partners: int,
) -> RoundOutcome:
    return strategy.run_round(server_round, weights, updates, failures, min_partners=min_partners)


@task(name="pooled-baseline", **PRIVATE)
def pooled(
    config: RunConfig, spec: ModelSpec, init_weights: Weights, scaling: Mapping[str, Sequence[float]]
) -> tuple[dict[str, dict[str, float]], list[dict[str, dict[str, float]]]]:
    """Simulation only: one model on the union of all partners' training splits, tested on each partner."""
    data = [partner_data(config, x.name) for x in config.partners]
    return p.pooled_baseline(
        data,
        spec=spec,
        init_weights=init_weights,
        scaling=scaling,
        settings=train_settings(config),
        rounds=config.federation.rounds,
        seed=p.derive_seed(config.seed, "pooled"),
        device=config.device,
    )


@task(name="log-round", task_run_name="log-round-{server_round}", persist_result=False)
def log_round(tracker: Tracker, run_id: str, server_round: int, metrics: Mapping[str, float], weights: Weights) -> None:
    tracker.log_metrics(run_id, metrics, step=server_round)
    tracker.log_weights(run_id, weights, f"global_model/round_{server_round:04d}.pt")
