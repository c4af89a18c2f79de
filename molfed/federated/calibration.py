"""Calibrating the kept model across partners: three partner jobs and the coordinator's side that joins them.

1. ``moments``: each partner sums its training split's graph embeddings under the model (count, ``sum h``,
   ``sum h h^T``); the coordinator turns the federation's sums into a mean and a precision matrix.
2. ``scores``: each partner scores its calibration split (:func:`calibration_graphs`) against the model and that
   domain model and reports :func:`~molfed.federated.conformal.score_sums` (fixed-bin histograms and NLL sums); the
   coordinator reads quantiles and temperatures off their sum (:func:`~molfed.federated.conformal.build_calibration`).
3. ``measure``: each partner applies the calibration to its test split and reports coverage, widths, set sizes and
   the out-of-domain rate (aggregate metrics). With ``method: mondrian`` a partner builds its own calibration from its
   own scores, measures with it and keeps it in its workspace.

Only sums leave a partner in steps 1 and 2; the sums travel in the clear or, under secure aggregation, as a secure
sum (:func:`molfed.federated.secure.rounds.secure_vector_sum`), so the coordinator sees the federation's totals only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfed.federated import conformal as cf
from molfed.federated import partner as p
from molfed.federated.partner_state import model_dir
from molfed.federated.types import Failure, QuorumError, Weights
from molfed.models.model import ModelSpec, MoleculeModel

log = logging.getLogger(__name__)

STEPS = ("moments", "scores", "measure")


def calibration_graphs(data: p.PartnerData) -> tuple[Data, ...]:
    """The partner's calibration split: the ``cal`` part carved from training (``calibration.source: holdout``),
    else the validation split (``source: val``)."""
    return data.splits["cal"] if "cal" in data.splits else data.splits["val"]


@torch.no_grad()
def outputs(model: MoleculeModel, graphs: Sequence[Data], batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """``(y [n, T], raw [n, T], pred [n, T], embeddings [n, d])`` of ``graphs`` under ``model``."""
    device = next(model.parameters()).device
    model.eval()
    ys, raws, embs = [], [], []
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        h = model.embed(batch.x, batch.edge_index, batch.edge_attr, batch.batch)
        raws.append(model.apply_heads(h).cpu())
        embs.append(h.cpu())
        ys.append(batch.y.cpu())
    n_tasks, d = len(model.spec.task_names), model.spec.hidden_channels
    if not raws:
        empty = np.zeros((0, n_tasks))
        return empty, empty, empty, np.zeros((0, d))
    raw = torch.cat(raws)
    pred = model.to_predictions(raw.to(model.target_mean.device)).cpu()
    return (
        torch.cat(ys).double().numpy(),
        raw.double().numpy(),
        pred.double().numpy(),
        torch.cat(embs).double().numpy(),
    )


def _shared(data: p.PartnerData, y: np.ndarray, n_tasks: int) -> np.ndarray:
    """Label columns of the federation's ``n_tasks`` tasks (a partner with private tasks has more columns; one that
    keeps no shared task, ``shared_tasks: []``, has none of them: all missing)."""
    if data.layout is None:
        return y
    if not data.layout.has_shared:
        return np.full((len(y), n_tasks), np.nan, dtype=np.float64)
    return y[:, data.layout.shared_columns]


def moments_job(
    data: p.PartnerData, *, spec: ModelSpec, weights: Weights, scaling: Mapping[str, Sequence[float]], device: str
) -> cf.Sums:
    """Step 1: ``{"n": [1], "sum": [d], "outer": [d, d]}`` of the training split's graph embeddings."""
    model = p.materialize(spec, weights, scaling, device)
    _, _, _, h = outputs(model, data.splits["train"])
    return embedding_moments(h)


def embedding_moments(h: np.ndarray) -> cf.Sums:
    """``{"n": [1], "sum": [d], "outer": [d, d]}`` of embeddings ``h [n, d]``: what a partner adds to the domain."""
    return {"n": np.array([float(len(h))]), "sum": h.sum(axis=0), "outer": h.T @ h}


def domain_from_moments(moments: cf.Sums) -> cf.EmbeddingStats:
    """Mean and precision of the embeddings whose (summed) :func:`embedding_moments` are ``moments``.

    Raises
    ------
    ValueError
        As :func:`conformal.embedding_stats` (too few embeddings).
    """
    return cf.embedding_stats(float(moments["n"][0]), moments["sum"], moments["outer"])


def moments_layout(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    d = spec.hidden_channels
    return {"n": (1,), "sum": (d,), "outer": (d, d)}


def scores_job(
    data: p.PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    device: str,
    domain: cf.EmbeddingStats | None,
) -> cf.Sums:
    """Step 2: histograms of the calibration split's scores and NLL sums (:func:`conformal.score_sums`)."""
    model = p.materialize(spec, weights, scaling, device)
    y, raw, pred, h = outputs(model, calibration_graphs(data))
    return cf.score_sums(
        _shared(data, y, len(spec.task_names)),
        raw,
        pred,
        task_names=spec.task_names,
        task_types=spec.task_types,
        std=scaling["std"],
        domain=None if domain is None else cf.domain_scores(h, domain),
    )


def measure(
    y: np.ndarray, raw: np.ndarray, pred: np.ndarray, h: np.ndarray, calibration: cf.Calibration
) -> dict[str, float]:
    """Aggregates of ``calibration`` on labelled molecules: per task and level ``covered_<pct>.<task>`` (count of
    labels inside the interval / set), ``width_<pct>.<task>`` (summed interval width or set size), ``n.<task>``
    (labels); ``n_molecules`` and ``n_out_of_domain``. Sums, so partners' values add up to the union's."""
    out: dict[str, float] = {"n_molecules": float(len(y))}
    for i, task in enumerate(calibration.tasks):
        has = ~np.isnan(y[:, i])
        out[f"n.{task.name}"] = float(has.sum())
        if task.type == "regression":
            for level, (lo, hi) in zip(calibration.levels, cf.intervals(pred[has, i], task), strict=True):
                out[f"covered_{cf.percent(level)}.{task.name}"] = float(((y[has, i] >= lo) & (y[has, i] <= hi)).sum())
                out[f"width_{cf.percent(level)}.{task.name}"] = float((hi - lo).sum())
        else:
            label = y[has, i]
            for level, (has0, has1) in zip(calibration.levels, cf.prediction_sets(raw[has, i], task), strict=True):
                hit = np.where(label == 1, has1, has0)
                out[f"covered_{cf.percent(level)}.{task.name}"] = float(hit.sum())
                out[f"width_{cf.percent(level)}.{task.name}"] = float((has0.astype(int) + has1).sum())
    if calibration.domain is not None:
        threshold = calibration.domain.threshold
        scores = cf.domain_scores(h, calibration.domain.stats())
        out["n_out_of_domain"] = float(0 if threshold is None else (scores > threshold).sum())
    return out


def measure_job(
    data: p.PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    device: str,
    calibration: cf.Calibration,
    domain_level: float = 0.95,
    state_key: str = "default",
) -> dict[str, float]:
    """Step 3: :func:`measure` on the test split; under ``mondrian`` with the partner's own calibration (built from
    its own scores and written to ``<workspace>/models/<state_key>/calibration.json``, which stays with it)."""
    model = p.materialize(spec, weights, scaling, device)
    if calibration.method == "mondrian":
        domain = calibration.domain.stats() if calibration.domain is not None else None
        own = scores_job(data, spec=spec, weights=weights, scaling=scaling, device=device, domain=domain)
        calibration = cf.build_calibration(
            own,
            task_names=spec.task_names,
            task_types=spec.task_types,
            std=scaling["std"],
            levels=calibration.levels,
            method="mondrian",
            domain=domain,
            domain_level=domain_level,
        )
        if data.workspace is not None:
            directory = model_dir(data.workspace, state_key)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "calibration.json").write_text(json.dumps(asdict(calibration)))
    y, raw, pred, h = outputs(model, data.splits["test"])
    return measure(_shared(data, y, len(spec.task_names)), raw, pred, h, calibration)


# ---- the coordinator's side ------------------------------------------------------------------------------------


class CalibrationPool(Protocol):
    """How the coordinator reaches partners for calibration: run ``step`` (one of :data:`STEPS`) at every partner
    with ``payload`` (``domain``, ``calibration``, ...) and return replies and failures by partner. Under secure
    aggregation the replies of ``moments`` and ``scores`` carry nothing: the partners hold their sums for the
    summer."""

    def calibrate(
        self,
        step: str,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        payload: Mapping[str, Any],
    ) -> tuple[dict[str, Any], list[Failure]]: ...


Summer = Callable[[str, Mapping[str, Any], Mapping[str, tuple[int, ...]]], cf.Sums]
"""``(step, replies by partner, layout) -> the federation's sums`` (plain: :func:`plain_sum`; secure: a secure sum
over the partners that replied)."""


def plain_sum(step: str, replies: Mapping[str, Any], layout: Mapping[str, tuple[int, ...]]) -> cf.Sums:
    return cf.add_sums(replies.values())


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    calibration: cf.Calibration
    """What the registered model carries (the federated calibration)."""
    measured: dict[str, dict[str, float]]
    """Per partner, :func:`measure`'s sums on its test split."""
    failures: tuple[Failure, ...]


def calibrate(
    pool: CalibrationPool,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    levels: Sequence[float],
    method: str,
    domain_level: float,
    quorum: int,
    summer: Summer = plain_sum,
) -> CalibrationResult:
    """The three steps with every partner; partners that fail a step sit out the later ones.

    Raises
    ------
    QuorumError
        If fewer than ``quorum`` partners answer a step.
    """
    failures: list[Failure] = []

    def ask(step: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        replies, failed = pool.calibrate(step, spec, weights, scaling, payload)
        failures.extend(failed)
        if len(replies) < quorum:
            reasons = "; ".join(f"{f.partner}: {f.reason}" for f in failed) or "none"
            raise QuorumError(
                f"calibration ({step}): {len(replies)} partner(s) answered, quorum is {quorum} ({reasons})"
            )
        return replies

    moments = summer("moments", ask("moments", {}), moments_layout(spec))
    domain = domain_from_moments(moments)
    layout = cf.sums_layout(spec.task_names, spec.task_types, domain=True)
    sums = summer("scores", ask("scores", {"domain": domain}), layout)
    calibration = cf.build_calibration(
        sums,
        task_names=spec.task_names,
        task_types=spec.task_types,
        std=scaling["std"],
        levels=levels,
        method=method,
        domain=domain,
        domain_level=domain_level,
    )
    measured = ask("measure", {"calibration": calibration, "domain_level": domain_level})
    log.info("calibrated on %d partner(s); %d failure(s)", len(measured), len(failures))
    return CalibrationResult(calibration, measured, tuple(failures))


def run_step(
    data: p.PartnerData,
    step: str,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    payload: Mapping[str, Any],
    device: str = "cpu",
    state_key: str = "default",
) -> Any:
    """One partner's ``step`` (the same code in every pool).

    Raises
    ------
    ValueError
        If ``step`` is unknown.
    """
    common: dict[str, Any] = {"spec": spec, "weights": weights, "scaling": scaling, "device": device}
    if step == "moments":
        return moments_job(data, **common)
    if step == "scores":
        return scores_job(data, domain=payload.get("domain"), **common)
    if step == "measure":
        return measure_job(
            data,
            calibration=payload["calibration"],
            domain_level=payload.get("domain_level", 0.95),
            state_key=state_key,
            **common,
        )
    raise ValueError(f"unknown calibration step {step!r}; choose from {list(STEPS)}")


def metrics(measured: Mapping[str, Mapping[str, float]], calibration: cf.Calibration) -> dict[str, float]:
    """MLflow metrics from partners' measurements, in the run's naming scheme:
    ``test_coverage_<pct>[.<task>][.<partner>]`` (share of labels inside the interval or set),
    ``test_interval_width_<pct>...`` (mean width in the task's units; classification: ``test_set_size_<pct>``),
    ``test_out_of_domain_rate[.<partner>]``; no suffix = the union of all partners' test splits."""
    out: dict[str, float] = {}
    groups = {**{n: [n] for n in measured}, "": list(measured)}
    for who, names in groups.items():
        suffix = f".{who}" if who else ""
        total = {k: sum(measured[n].get(k, 0.0) for n in names) for k in {k for n in names for k in measured[n]}}
        for level in calibration.levels:
            pct = cf.percent(level)
            covered = labels = 0.0
            for task in calibration.tasks:
                n = total.get(f"n.{task.name}", 0.0)
                if n == 0:
                    continue
                width = "interval_width" if task.type == "regression" else "set_size"
                out[f"test_coverage_{pct}.{task.name}{suffix}"] = total[f"covered_{pct}.{task.name}"] / n
                out[f"test_{width}_{pct}.{task.name}{suffix}"] = total[f"width_{pct}.{task.name}"] / n
                covered, labels = covered + total[f"covered_{pct}.{task.name}"], labels + n
            if labels:
                out[f"test_coverage_{pct}{suffix}"] = covered / labels
        if total.get("n_molecules") and "n_out_of_domain" in total:
            out[f"test_out_of_domain_rate{suffix}"] = total["n_out_of_domain"] / total["n_molecules"]
    return {k: v for k, v in out.items() if np.isfinite(v)}


def coverage_table(measured: Mapping[str, Mapping[str, float]], calibration: cf.Calibration) -> list[dict[str, Any]]:
    """Rows ``{partner, level, coverage, n}`` per partner and the union (``partner = "all"``), over all tasks."""
    rows = []
    for who, names in {**{n: [n] for n in measured}, "all": list(measured)}.items():
        for level in calibration.levels:
            pct = cf.percent(level)
            covered = sum(measured[n].get(f"covered_{pct}.{t.name}", 0.0) for n in names for t in calibration.tasks)
            n = sum(measured[x].get(f"n.{t.name}", 0.0) for x in names for t in calibration.tasks)
            rows.append({"partner": who, "level": level, "coverage": covered / n if n else float("nan"), "n": int(n)})
    return rows


def secure_summer(
    transport: Any, *, run_id: str, threshold: int, scale: int, public_keys: Mapping[str, str] | None = None
) -> Summer:
    """A :data:`Summer` that adds the sums partners hold (:func:`hold`) by secure aggregation over ``transport``:
    the coordinator learns the federation's totals only."""
    from molfed.federated.secure.rounds import secure_vector_sum

    def add(step: str, replies: Mapping[str, Any], layout: Mapping[str, tuple[int, ...]]) -> cf.Sums:
        sums, _, dropped = secure_vector_sum(
            transport,
            sorted(replies),
            layout=layout,
            run_id=secure_key(run_id, step),
            threshold=threshold,
            scale=scale,
            public_keys=public_keys,
        )
        for f in dropped:
            log.warning("calibration (%s): partner %s left the secure sum", step, f.partner)
        return sums

    return add


def secure_key(run_id: str, step: str) -> str:
    """The secure sum's own run id for a calibration step (fresh keys and masks, never a training round's)."""
    return f"{run_id}/calibration/{step}"


def hold(name: str, sums: cf.Sums, *, run_id: str, step: str) -> None:
    """Partner side (local mode) under secure aggregation: keep ``sums`` for the secure sum instead of sending them."""
    from molfed.federated.secure.local import hold_update
    from molfed.federated.types import Update

    hold_update(Update(name, sums, 1), run_id=secure_key(run_id, step), server_round=0)
