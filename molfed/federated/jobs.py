"""A partner's three jobs in a federation, the same in local and sites mode: prepare, round, finish.

Each job runs on the partner's side and returns only what may leave the partner (JSON-able counts, metrics,
binned parity counts, and an :class:`~molfed.federated.types.Update` of weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from molfed.federated import partner as p
from molfed.federated import private_heads as ph
from molfed.federated import val_sums
from molfed.federated.conformal import Calibration
from molfed.federated.own_calibration import own_calibration
from molfed.federated.partner_state import model_dir, safe_name
from molfed.federated.types import Update, Weights
from molfed.models.model import ModelSpec, MoleculeModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    summary: p.PartnerSummary
    moments: dict[str, list[float]]
    """Per-task count / sum / sum of squares of training labels (for federation-wide target scaling)."""


@dataclass(frozen=True, slots=True)
class RoundReply:
    update: Update
    incoming_val: dict[str, float] = field(default_factory=dict)
    """Validation metrics of the weights the partner received (the previous round's global model), if asked."""


@dataclass(frozen=True, slots=True)
class FinalReport:
    val: dict[str, float]
    test: dict[str, float]
    parity: list[list[int]]
    """Binned (measured, predicted) counts on the test split, sparse cells blanked; [] if no regression task."""
    champion_val: dict[str, float] | None = None
    """Validation metrics of the registry's champion model, when one was sent."""
    private: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{split: {metric.task: value}}`` for the partner's private tasks, if it has any and allows reporting them."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prepare(data: p.PartnerData) -> Prepared:
    return Prepared(data.summary, p.partner_label_moments(data))


def round_job(
    data: p.PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: p.TrainSettings,
    seed: int,
    server_round: int,
    options: Mapping[str, float],
    tensors: Mapping[str, Weights] | None = None,
    state_key: str = "default",
    device: str = "cpu",
    val_as_sums: bool = False,
) -> RoundReply:
    """A partner's round ``server_round`` of a federation seeded ``seed``: from round 2 on, first evaluate the
    incoming global model (the previous round's) on the validation split; then train it locally with the strategy's
    options and tensors (partner-private strategy state lives under ``state_key`` in the workspace).

    With ``val_as_sums`` (secure aggregation) the evaluation travels as sums inside the update
    (:mod:`molfed.federated.val_sums`) and the reply's ``incoming_val`` stays empty.

    The one derivation of a partner's round seed and evaluation rule, whatever pool runs the job."""
    incoming: dict[str, float] = {}
    sums = None
    if server_round > 1 and val_as_sums:
        sums = val_sums.partner_sums(data, spec=spec, weights=weights, scaling=scaling, device=device)
    elif server_round > 1:
        incoming = p.evaluate_partner(data, spec=spec, weights=weights, scaling=scaling, device=device)["val"]
    update = p.local_update(
        data,
        spec=spec,
        weights=weights,
        scaling=scaling,
        settings=settings,
        seed=p.derive_seed(seed, "round", server_round, data.name),
        device=device,
        fit_options=options,
        fit_tensors=tensors,
        server_round=server_round,
        state_key=state_key,
    )
    return RoundReply(update if sums is None else val_sums.embed(update, sums), incoming)


def finish_job(
    data: p.PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    parity_task: int | None,
    parity_edges: Sequence[float],
    champion: tuple[ModelSpec, Weights, Mapping[str, Sequence[float]]] | None = None,
    device: str = "cpu",
    state_key: str = "default",
    private: PrivateOptions | None = None,
) -> FinalReport:
    """Final validation and test metrics, binned parity counts and, if given, the champion's validation metrics.

    A partner with private tasks also exports its own model (final ``weights`` + its private head from the
    workspace) to ``<workspace>/models/<state_key>/``, calibrated on its own data when ``private`` gives levels
    (:func:`~molfed.federated.own_calibration.own_calibration`), and, per ``private``, reports private-task
    metrics."""
    metrics = p.evaluate_partner(
        data, spec=spec, weights=weights, scaling=scaling, splits=("val", "test"), device=device
    )
    parity: list[list[int]] = []
    if parity_task is not None:
        predictions = None
        if data.layout is None or data.layout.has_shared:  # else parity_counts gives an empty histogram
            predictions = p.predict_split(data, spec=spec, weights=weights, scaling=scaling, device=device)
        parity = p.parity_counts(
            data,
            spec=spec,
            weights=weights,
            scaling=scaling,
            task_index=parity_task,
            edges=parity_edges,
            device=device,
            predictions=predictions,
        )
        if predictions is not None and data.workspace is not None:  # the full scatter stays with the partner
            own_parity_plot(data, predictions, parity_task, spec.task_names[parity_task], state_key)
    champion_val = None
    if champion is not None:
        c_spec, c_weights, c_scaling = champion
        try:
            champion_val = p.evaluate_partner(data, spec=c_spec, weights=c_weights, scaling=c_scaling, device=device)[
                "val"
            ]
        except (ValueError, RuntimeError) as exc:  # e.g. other tasks or features: not comparable here
            log.warning("partner %s: champion not comparable (%s)", data.name, type(exc).__name__)
    private_metrics: dict[str, dict[str, float]] = {}
    if data.has_private:
        options = private or PrivateOptions()
        model = p.private_model(data, spec=spec, weights=weights, scaling=scaling, state_key=state_key, device=device)
        evaluated = p.evaluate_private(model, data, ("val", "test"))
        if options.report_metrics:
            private_metrics = evaluated
        calibration = None
        if options.calibration_levels:  # the partner's own, from its own data; stays with it
            calibration = own_calibration(
                model, data, levels=options.calibration_levels, domain_level=options.domain_level
            )
        export_private_model(
            data, model, state_key=state_key, metrics=evaluated, publish=options.publish, calibration=calibration
        )
    return FinalReport(metrics["val"], metrics["test"], parity, champion_val, private_metrics)


Publish = Callable[[Path, Mapping[str, Mapping[str, float]]], object]
"""``(exported model directory, private-task metrics by split)``: where a partner's exported model also goes."""


@dataclass(frozen=True, slots=True)
class PrivateOptions:
    """A partner's choices about its private tasks (from its run-config entry or site config)."""

    report_metrics: bool = True
    """Send private-task metrics (aggregates, named by task) to the federation."""
    publish: Publish | None = None
    """Also hand the exported model to this (the adapters log it to the partner's own MLflow, if configured)."""
    calibration_levels: tuple[float, ...] = ()
    """Calibrate the exported model at these levels, on the partner's own calibration split (empty: not at all; the
    run's ``calibration.levels`` when its calibration is active)."""
    domain_level: float = 0.95
    """The exported model's applicability-domain level (the run's ``calibration.domain_level``)."""


def export_private_model(
    data: p.PartnerData,
    model: MoleculeModel,
    *,
    state_key: str,
    metrics: Mapping[str, Mapping[str, float]],
    publish: Publish | None = None,
    calibration: Calibration | None = None,
) -> Path:
    """Write the partner's model to ``<workspace>/models/<state_key>/`` (and hand it to ``publish`` if given); a
    ``calibration`` goes into its ``model.json`` as in a registered model's (``calibration``)."""
    assert data.workspace is not None
    standardize = asdict(data.standardize) if data.standardize is not None else None
    meta: dict[str, object] = {
        "partner": data.name,
        "federation_run": state_key,
        "standardize": standardize,
        "metrics": metrics,
    }
    if calibration is not None:
        meta["calibration"] = asdict(calibration)
    directory = ph.export_model(model_dir(data.workspace, state_key), model, meta=meta)
    if publish is not None:
        publish(directory, metrics)
    return directory


def own_parity_plot(
    data: p.PartnerData, predictions: tuple[Any, Any], task_index: int, task: str, state_key: str
) -> Path:
    """Every test molecule as a point (measured vs predicted): ``<workspace>/reports/<state_key>/parity_test.png``,
    for the partner's eyes only (what leaves the partner is the binned, thresholded view)."""
    from molfed import plots

    assert data.workspace is not None
    target = Path(data.workspace) / "reports" / safe_name(state_key) / "parity_test.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    y_true, y_pred = predictions
    fig = plots.parity_scatter(y_true[:, task_index], y_pred[:, task_index], task, title=f"{data.name}, test split")
    fig.savefig(target, dpi=100)
    plots.close(fig)
    return target


def private_metrics(reports: Mapping[str, FinalReport]) -> dict[str, float]:
    """``private_{split}_{metric}.{task}.{partner}`` for every reported private-task metric."""
    return {
        f"private_{split}_{name}.{partner}": value
        for partner, report in reports.items()
        for split, metrics in report.private.items()
        for name, value in metrics.items()
    }
