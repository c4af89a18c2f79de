"""Partner-side tasks. They receive the run config and a partner *name*; data stays in the partner's process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task

from molfed.chem.standardize import StandardizeOptions
from molfed.config import RunConfig
from molfed.federated import partner as p
from molfed.federated.types import Update, Weights
from molfed.models.model import ModelSpec
from tasks._options import PRIVATE


def partner_data(config: RunConfig, name: str) -> p.PartnerData:
    """Prepare (or fetch from this process / the workspace cache) partner ``name``'s data."""
    cfg = next(x for x in config.partners if x.name == name)
    return p.prepare_partner(
        name,
        path=cfg.path,
        workspace=config.workspace_for(cfg),
        smiles_column=cfg.smiles_column,
        label_columns=[cfg.column_for(t.name) for t in config.tasks],
        task_types=[t.type for t in config.tasks],
        standardize=standardize_options(config),
        duplicates=config.data.duplicates,
        split_fractions=config.data.split_fractions,
        seed=config.seed,
    )


def standardize_options(config: RunConfig) -> StandardizeOptions:
    return StandardizeOptions(**config.data.standardize.model_dump())


def train_settings(config: RunConfig) -> p.TrainSettings:
    t = config.train
    return p.TrainSettings(t.epochs, t.batch_size, t.optimizer, t.lr, t.weight_decay)


@task(name="prepare-partner", task_run_name="prepare-{name}", **PRIVATE)
def prepare_partner(config: RunConfig, name: str) -> p.PartnerSummary:
    return partner_data(config, name).summary


@task(name="label-moments", task_run_name="moments-{name}", **PRIVATE)
def label_moments(config: RunConfig, name: str) -> dict[str, list[float]]:
    return p.partner_label_moments(partner_data(config, name))


@task(name="local-update", task_run_name="train-{name}-round-{server_round}", **PRIVATE)
def local_update(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    server_round: int,
    fit_options: Mapping[str, float],
) -> Update:
    return p.local_update(
        partner_data(config, name),
        spec=spec,
        weights=weights,
        scaling=scaling,
        settings=train_settings(config),
        seed=p.derive_seed(config.seed, "round", server_round, name),
        proximal_mu=float(fit_options.get("proximal_mu", 0.0)),
        device=config.device,
    )


@task(name="evaluate", task_run_name="evaluate-{name}-round-{server_round}", **PRIVATE)
def evaluate(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    splits: Sequence[str],
    server_round: int,
) -> dict[str, dict[str, float]]:
    return p.evaluate_partner(
        partner_data(config, name),
        spec=spec,
        weights=weights,
        scaling=scaling,
        splits=splits,
        device=config.device,
    )


@task(name="parity-counts", task_run_name="parity-{name}", **PRIVATE)
def parity_counts(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    task_index: int,
    edges: Sequence[float],
) -> list[list[int]]:
    return p.parity_counts(
        partner_data(config, name),
        spec=spec,
        weights=weights,
        scaling=scaling,
        task_index=task_index,
        edges=edges,
        device=config.device,
    )


@task(name="local-only-baseline", task_run_name="local-only-{name}", **PRIVATE)
def local_only(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    init_weights: Weights,
    scaling: Mapping[str, Sequence[float]],
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Train on this partner alone with the federation's budget; return test metrics and per-round val metrics."""
    data = partner_data(config, name)
    return p.local_only_baseline(
        data,
        spec=spec,
        init_weights=init_weights,
        scaling=scaling,
        settings=train_settings(config),
        rounds=config.federation.rounds,
        seed=p.derive_seed(config.seed, "local-only", name),
        device=config.device,
    )
