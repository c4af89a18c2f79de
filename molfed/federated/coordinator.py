"""Coordinator-side helpers: the global model's spec and initial weights, and metric bookkeeping per round.

Pure functions of what partners send (weights, counts, metrics); no partner data reaches this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from molfed.chem.featurize import ATOM_DIM, BOND_DIM
from molfed.federated.aggregate import weighted_metrics
from molfed.federated.types import Update
from molfed.federated.weights import get_weights
from molfed.models.model import ModelSpec, build_model

#: Model kinds compared in every run.
FEDERATED, LOCAL_ONLY, POOLED = "federated", "local-only", "pooled"


def model_spec(
    *,
    encoder: str,
    hidden_channels: int,
    num_layers: int,
    dropout: float,
    readout: str,
    head_layers: int,
    task_names: Sequence[str],
    task_types: Sequence[str],
) -> ModelSpec:
    return ModelSpec(
        encoder=encoder,
        in_channels=ATOM_DIM,
        edge_dim=BOND_DIM,
        hidden_channels=hidden_channels,
        num_layers=num_layers,
        dropout=dropout,
        readout=readout,
        head_layers=head_layers,
        task_names=tuple(task_names),
        task_types=tuple(task_types),
    )


def initial_weights(spec: ModelSpec, seed: int) -> dict:
    """Seeded initial global weights (float state only)."""
    return get_weights(build_model(spec, seed=seed))


def primary_metric(task_types: Sequence[str]) -> str:
    """The headline metric: mean RMSE if any task is regression, else mean ROC-AUC."""
    return "rmse" if "regression" in task_types else "roc_auc"


def split_metrics(
    split: str, per_partner: Mapping[str, Mapping[str, float]], sizes: Mapping[str, int]
) -> dict[str, float]:
    """``{split}_{metric}.{partner}`` for every partner plus ``{split}_{metric}`` weighted by split sizes."""
    out: dict[str, float] = {}
    for partner, metrics in per_partner.items():
        for name, value in metrics.items():
            out[f"{split}_{name}.{partner}"] = value
    pooled = weighted_metrics([(dict(m), sizes.get(p, 0)) for p, m in per_partner.items()])
    out.update({f"{split}_{name}": value for name, value in pooled.items()})
    return out


def train_metrics(updates: Sequence[Update], n_partners: int) -> dict[str, float]:
    """Sample-weighted training loss of the round's updates and the count of partners that did not contribute."""
    out = {f"{k}": v for k, v in weighted_metrics([(dict(u.metrics), u.n_samples) for u in updates]).items()}
    out["partners_ok"] = float(len(updates))
    out["partners_failed"] = float(n_partners - len(updates))
    return out


def comparison_rows(
    test: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str, kinds: Sequence[str]
) -> list[dict[str, float | str | None]]:
    """One row per partner: ``metric`` on its test split for each model kind (None where absent)."""
    rows: list[dict[str, float | str | None]] = []
    for partner, by_kind in test.items():
        row: dict[str, float | str | None] = {"partner": partner}
        for kind in kinds:
            row[kind] = by_kind.get(kind, {}).get(metric)
        rows.append(row)
    return rows
