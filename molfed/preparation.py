"""A partner's data and training settings as a run config asks for them: one definition for the flow (local and
sites mode, through :mod:`tasks.partner`) and for the benchmarks, which must train on exactly the splits a run
trains on (the calibration hold-out included) without importing Prefect."""

from __future__ import annotations

from molfed.chem.standardize import StandardizeOptions
from molfed.config import PartnerConfig, RunConfig
from molfed.federated import partner as p
from molfed.federated.private_heads import PrivateTask


def standardize_options(config: RunConfig) -> StandardizeOptions:
    return StandardizeOptions(**config.data.standardize.model_dump())


def train_settings(config: RunConfig) -> p.TrainSettings:
    t = config.train
    return p.TrainSettings(
        t.epochs,
        t.batch_size,
        t.optimizer,
        t.lr,
        t.weight_decay,
        lr_schedule=t.lr_schedule,
        warmup_rounds=t.warmup_rounds,
        rounds=config.federation.rounds,
    )


def calibration_fraction(config: RunConfig) -> float:
    """The share of training held out for calibration (0: none carved; ``source: val`` calibrates on validation)."""
    c = config.calibration
    return c.fraction if c.active(config.mode) and c.source == "holdout" else 0.0


def prepare_partner_data(config: RunConfig, cfg: PartnerConfig) -> p.PartnerData:
    """Prepare (or fetch from this process / the workspace cache) partner ``cfg``'s data with the run's options:
    library, columns, private tasks, standardization, duplicates, scaffold split, seed, calibration hold-out."""
    assert cfg.path is not None, "a partner's library path is known only on its side"
    return p.prepare_partner(
        cfg.name,
        path=cfg.path,
        workspace=config.workspace_for(cfg),
        smiles_column=cfg.smiles_column,
        label_columns=[cfg.column_for(t.name) if cfg.has_shared(t.name) else None for t in config.tasks],
        task_types=[t.type for t in config.tasks],
        private_tasks=[PrivateTask(t.name, t.type, t.label_column) for t in cfg.private_tasks],
        standardize=standardize_options(config),
        duplicates=config.data.duplicates,
        split_fractions=config.data.split_fractions,
        seed=config.seed,
        workers=config.data.workers,
        calibration_fraction=calibration_fraction(config),
    )
