"""Coordinator-side helpers: the global model's spec and initial weights, and metric bookkeeping per round.

Pure functions of what partners send (weights, counts, metrics); no partner data reaches this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from molfed.chem.featurize import ATOM_DIM, BOND_DIM
from molfed.federated.aggregate import weighted_metrics
from molfed.federated.types import Update
from molfed.federated.weights import get_weights
from molfed.models.model import ModelSpec, build_model
from molfed.train.metrics import higher_is_better

#: Model kinds compared in every run (fine-tuned: each partner's personalization of the federated model).
FEDERATED, LOCAL_ONLY, POOLED = "federated", "local-only", "pooled"
FINE_TUNED = "federated+fine-tune"
ALL_PARTNERS = "all partners"


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


def combine_partners(per_partner: Mapping[str, Mapping[str, float]], sizes: Mapping[str, int]) -> dict[str, float]:
    """One value per metric over all partners, weighted by split sizes.

    RMSE is combined as ``sqrt(sum n_k rmse_k^2 / sum n_k)`` (the RMSE over the union of the splits); other
    metrics as the size-weighted mean.
    """
    squared = {
        p: {k: (v * v if k.split(".")[0] == "rmse" else v) for k, v in m.items()} for p, m in per_partner.items()
    }
    pooled = weighted_metrics([(squared[p], sizes.get(p, 0)) for p in per_partner])
    return {k: (v**0.5 if k.split(".")[0] == "rmse" else v) for k, v in pooled.items()}


def spread(values: Sequence[float], metric: str) -> dict[str, float]:
    """Fairness across partners: the worst partner's value of ``metric`` (max for RMSE-like metrics, min for
    higher-is-better ones) and the population std of the partners' values; ``{}`` for no values."""
    if not values:
        return {}
    worst = min(values) if higher_is_better(metric) else max(values)
    return {"worst": float(worst), "std": float(np.std(values))}


def split_metrics(
    split: str, per_partner: Mapping[str, Mapping[str, float]], sizes: Mapping[str, int]
) -> dict[str, float]:
    """``{split}_{metric}.{partner}`` for every partner, ``{split}_{metric}`` over all partners, and the fairness
    summaries ``{split}_{metric}.worst`` and ``{split}_{metric}.std`` over the partners present (:func:`spread`)."""
    out: dict[str, float] = {}
    by_metric: dict[str, list[float]] = {}
    for partner, metrics in per_partner.items():
        for name, value in metrics.items():
            out[f"{split}_{name}.{partner}"] = value
            by_metric.setdefault(name, []).append(value)
    out.update({f"{split}_{name}": value for name, value in combine_partners(per_partner, sizes).items()})
    for name, values in by_metric.items():
        out.update({f"{split}_{name}.{k}": v for k, v in spread(values, name).items()})
    return out


def train_metrics(updates: Sequence[Update], n_partners: int) -> dict[str, float]:
    """Sample-weighted training loss of the round's updates, the partners asked (``partners_sampled`` =
    ``n_partners``, the round's sample) and those of them that did not contribute (``partners_failed``)."""
    out = {f"{k}": v for k, v in weighted_metrics([(dict(u.metrics), u.n_samples) for u in updates]).items()}
    out["partners_sampled"] = float(n_partners)
    out["partners_ok"] = float(len(updates))
    out["partners_failed"] = float(n_partners - len(updates))
    return out


def comparison_rows(
    test: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str, kinds: Sequence[str], sizes: Mapping[str, int]
) -> list[dict[str, float | str | None]]:
    """One row per partner with ``metric`` on its test split per model kind (None where absent), then a row
    ``all partners`` over the union of the test splits."""
    rows: list[dict[str, float | str | None]] = []
    for partner, by_kind in test.items():
        row: dict[str, float | str | None] = {"partner": partner}
        for kind in kinds:
            row[kind] = by_kind.get(kind, {}).get(metric)
        rows.append(row)
    total: dict[str, float | str | None] = {"partner": ALL_PARTNERS}
    for kind in kinds:
        per_partner = {
            p: {metric: by_kind[kind][metric]} for p, by_kind in test.items() if metric in by_kind.get(kind, {})
        }
        total[kind] = combine_partners(per_partner, sizes).get(metric) if len(per_partner) == len(test) else None
    rows.append(total)
    return rows


def decide_promotion(
    new: float | None, champion: float | None, *, metric: str, min_improvement: float
) -> tuple[bool, str]:
    """Whether the new model replaces the champion: better by at least ``min_improvement`` (relative).

    Returns ``(promote, reason)``; a missing champion or champion score promotes, a missing new score does not.
    """
    if new is None:
        return False, f"new model has no validation {metric}"
    if champion is None:
        return True, "no comparable champion"
    higher = higher_is_better(metric)
    gain = (new - champion) / abs(champion) if higher else (champion - new) / abs(champion)
    if gain >= min_improvement and new != champion:
        return True, f"validation {metric} {new:.4f} vs champion {champion:.4f} ({gain:+.1%})"
    return False, f"validation {metric} {new:.4f} vs champion {champion:.4f} ({gain:+.1%} < {min_improvement:.1%})"
