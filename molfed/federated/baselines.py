"""Baselines a federation is compared with, run partner-side with the federation's budget: one partner alone
(local-only) and, in simulation only, all partners' training splits pooled."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch_geometric.data import Data

from molfed.federated import private_heads as ph
from molfed.federated.coordinator import combine_partners
from molfed.federated.partner import (
    PartnerData,
    TrainSettings,
    derive_seed,
    evaluate_partner,
    materialize,
    resolve_device,
)
from molfed.federated.types import Weights
from molfed.federated.weights import get_weights
from molfed.models.model import ModelSpec
from molfed.train.local import evaluate, train_local
from molfed.train.metrics import higher_is_better


def train_alone(
    graphs: Sequence[Data],
    *,
    spec: ModelSpec,
    init_weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: TrainSettings,
    rounds: int,
    seed: int,
    val_sets: Mapping[str, Sequence[Data]] | None = None,
    device: str = "cpu",
    selection: Selection | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, dict[str, float]]]]:
    """A baseline with the federation's budget: ``rounds`` x ``settings.epochs`` epochs on ``graphs`` alone,
    optimizer state reset each round as in the federation. Returns final weights and per-round validation
    metrics on each named set in ``val_sets``."""
    model = materialize(spec, init_weights, scaling, device)
    history = _train_rounds(
        model,
        graphs,
        settings,
        rounds,
        seed,
        lambda: {name: evaluate(model, vs) for name, vs in (val_sets or {}).items()},
        selection,
    )
    return get_weights(model), history


@dataclass(frozen=True, slots=True)
class Selection:
    """The federation's model selection, applied to a baseline: keep the round whose ``score`` of the round's
    measurement is best (``metric``'s direction), and stop after ``patience`` rounds without a better one."""

    metric: str
    score: Callable[[Any], float | None]
    patience: int | None = None
    keep_start: bool = False
    """Also score the starting weights (round 0) and keep them when no round beats them (fine-tuning)."""


def _train_rounds(
    model: Any,
    graphs: Sequence[Data],
    settings: TrainSettings,
    rounds: int,
    seed: int,
    measure: Callable[[], Any],
    selection: Selection | None = None,
) -> list[Any]:
    """``rounds`` x ``settings.epochs`` epochs on ``graphs`` (optimizer reset each round, as in the federation),
    with ``measure()`` after each round. With ``selection``, ``model`` ends holding the best-scored round's state
    and training stops early as the federation's does."""
    history: list[Any] = []
    best: tuple[int, float, dict[str, Any]] | None = None
    higher = selection is not None and higher_is_better(selection.metric)
    if selection is not None and selection.keep_start:
        start = selection.score(measure())
        if start is not None and math.isfinite(start):
            best = (0, start, copy.deepcopy(model.state_dict()))
    for r in range(1, rounds + 1):
        train_local(
            model,
            graphs,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            optimizer=settings.optimizer,
            lr=settings.lr_at(r),
            weight_decay=settings.weight_decay,
            seed=derive_seed(seed, "alone", r),
        )
        history.append(measure())
        if selection is None:
            continue
        value = selection.score(history[-1])
        if (
            value is not None
            and math.isfinite(value)
            and (best is None or (value > best[1] if higher else value < best[1]))
        ):
            best = (r, value, copy.deepcopy(model.state_dict()))
        if best is not None and selection.patience and r - best[0] >= selection.patience:
            break
    if best is not None:
        model.load_state_dict(best[2])
    return history


def local_only_baseline(
    data: PartnerData,
    *,
    spec: ModelSpec,
    init_weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: TrainSettings,
    rounds: int,
    seed: int,
    device: str = "cpu",
    select: str | None = None,
    patience: int | None = None,
    keep_start: bool = False,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """This partner alone, same budget as the federation: test metrics and per-round validation metrics (shared
    tasks; with private tasks the partner's whole model trains, its private head from its seeded start).

    With ``select`` (a validation metric, as the federation's ``selection: best_val``), the test metrics are those of
    the round with the best validation value, and training stops after ``patience`` rounds without a better one."""
    if data.layout is not None:
        chosen = None if select is None else Selection(select, lambda h: h.get(select), patience)
        return _local_only_with_private(
            data,
            spec=spec,
            init_weights=init_weights,
            scaling=scaling,
            settings=settings,
            rounds=rounds,
            seed=seed,
            selection=chosen,
        )
    weights, history = train_alone(
        data.splits["train"],
        spec=spec,
        init_weights=init_weights,
        scaling=scaling,
        settings=settings,
        rounds=rounds,
        seed=seed,
        val_sets={"val": data.splits["val"]},
        device=device,
        selection=None if select is None else Selection(select, lambda h: h["val"].get(select), patience, keep_start),
    )
    test = evaluate_partner(data, spec=spec, weights=weights, scaling=scaling, splits=("test",), device=device)
    return test["test"], [h["val"] for h in history]


def fine_tune(
    data: PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: TrainSettings,
    epochs: int,
    seed: int,
    metric: str,
    device: str = "cpu",
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Personalization: the federation's selected global model trained on this partner's training split alone for
    up to ``epochs`` epochs (the run's optimizer and learning rate, one epoch per step), keeping the epoch whose
    validation ``metric`` on the partner's own validation split is best — or the global model itself when no epoch
    beats it, so fine-tuning never reports a model that validated worse than the one it started from. Returns test
    metrics and the validation metrics after each epoch; the fine-tuned weights stay with the partner."""
    return local_only_baseline(
        data,
        spec=spec,
        init_weights=weights,
        scaling=scaling,
        settings=replace(settings, epochs=1, lr_schedule="constant", warmup_rounds=0),
        rounds=epochs,
        seed=seed,
        device=device,
        select=metric,
        keep_start=True,
    )


def _local_only_with_private(
    data: PartnerData,
    *,
    spec: ModelSpec,
    init_weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: TrainSettings,
    rounds: int,
    seed: int,
    device: str = "cpu",
    selection: Selection | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    assert data.layout is not None
    train, columns = data.splits["train"], data.layout.shared_columns
    model = ph.partner_model(
        spec, init_weights, scaling, layout=data.layout, train=train, head=None, device=resolve_device(device)
    )
    history = _train_rounds(
        model, train, settings, rounds, seed, lambda: ph.column_metrics(model, data.splits["val"], columns), selection
    )
    return ph.column_metrics(model, data.splits["test"], columns), history


def pooled_baseline(
    partners: Sequence[PartnerData],
    *,
    spec: ModelSpec,
    init_weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: TrainSettings,
    rounds: int,
    seed: int,
    device: str = "cpu",
    select: str | None = None,
    patience: int | None = None,
) -> tuple[dict[str, dict[str, float]], list[dict[str, dict[str, float]]]]:
    """Simulation only: the union of all training splits, same budget; tested on each partner's test split. With
    ``select``, the round with the best validation value over all partners' validation splits is tested (and
    ``patience`` stops training early), as in the federation."""
    sizes = {d.name: len(d.splits["val"]) for d in partners}
    chosen = None
    if select is not None:
        chosen = Selection(select, lambda h: combine_partners(h, sizes).get(select), patience)
    graphs = [g for d in partners for g in d.splits["train"]]
    weights, history = train_alone(
        graphs,
        spec=spec,
        init_weights=init_weights,
        scaling=scaling,
        settings=settings,
        rounds=rounds,
        seed=seed,
        val_sets={d.name: d.splits["val"] for d in partners},
        device=device,
        selection=chosen,
    )
    test = {
        d.name: evaluate_partner(d, spec=spec, weights=weights, scaling=scaling, splits=("test",), device=device)[
            "test"
        ]
        for d in partners
    }
    return test, history
