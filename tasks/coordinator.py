"""Coordinator-side steps of the flow: the pooled baseline (simulation only; a Prefect task) and the end-of-run
logging to MLflow and Prefect (plain functions: a task run each only added Prefect round trips)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from molfed import plots, progress, reporting
from molfed.config import RunConfig
from molfed.data.labels import DISAGREEING
from molfed.federated import baselines
from molfed.federated import partner as p
from molfed.federated.conformal import Calibration
from molfed.federated.coordinator import (
    FEDERATED,
    FINE_TUNED,
    LOCAL_ONLY,
    POOLED,
    combine_partners,
    decide_promotion,
    split_metrics,
)
from molfed.federated.jobs import FinalReport
from molfed.federated.partner import PartnerSummary
from molfed.federated.types import Weights
from molfed.models.model import ModelSpec
from molfed.preparation import standardize_options, train_settings
from molfed.tracking import ChampionModel, Tracker
from tasks._options import PRIVATE
from tasks.partner import partner_data, selection


@task(name="pooled-baseline", **PRIVATE)
def pooled(
    config: RunConfig, spec: ModelSpec, init_weights: Weights, scaling: Mapping[str, Sequence[float]]
) -> tuple[dict[str, dict[str, float]], list[dict[str, dict[str, float]]]]:
    """Simulation only: one model on the union of all partners' training splits, tested on each partner."""
    data = [partner_data(config, x.name) for x in config.partners]
    return baselines.pooled_baseline(
        data,
        spec=spec,
        init_weights=init_weights,
        scaling=scaling,
        settings=train_settings(config),
        rounds=config.federation.rounds,
        seed=p.derive_seed(config.seed, "pooled"),
        device=config.device,
        **selection(config),
    )


@dataclass
class Comparison:
    """What the references of a run produced: the model kinds compared (columns) and validation curves."""

    kinds: list[str]
    local_history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    pooled_history: list[dict[str, dict[str, float]]] = field(default_factory=list)


def compare(
    config: RunConfig,
    pool: Any,
    tracker: Tracker,
    run_id: str,
    spec: ModelSpec,
    init: Weights,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    sizes: Mapping[str, Mapping[str, int]],
    test: dict[str, dict[str, Mapping[str, float]]],
) -> Comparison:
    """The references the config asks for, next to the federated model (already in ``test``): local-only (the
    federation's budget from ``init``), each partner's fine-tuning of the kept ``weights`` and pooled (simulation
    only). Each is a child run and a column of ``test`` (filled in here, per partner)."""
    out = Comparison([FEDERATED])

    def add(kind: str, run_name: str, tests: Mapping[str, Mapping[str, float]], history: Sequence[Any]) -> None:
        log_baseline(tracker, run_id, run_name, kind, history, tests, sizes)
        for n in test:
            test[n][kind] = tests[n]
        out.kinds.append(kind)
        progress.advance("baselines", f"{kind} done")

    def per_step(results: Mapping[str, Any]) -> list[dict[str, dict[str, float]]]:
        """Per-partner curves (``{partner: (test, curve)}``) of the partners in the comparison as per-step rows;
        shorter where one stopped early."""
        curves = {n: c for n, (_, c) in results.items() if n in test}
        steps = max((len(c) for c in curves.values()), default=0)
        return [{n: c[i] for n, c in curves.items() if i < len(c)} for i in range(steps)]

    if config.baselines.local_only:
        local = pool.local_only(spec, init, scaling)
        out.local_history = {n: curve for n, (_, curve) in local.items()}
        add(LOCAL_ONLY, f"{config.name}-local-only", {n: t for n, (t, _) in local.items()}, per_step(local))
    if config.baselines.fine_tune_epochs:  # personalization: each partner's own continuation of the kept model
        tuned = pool.fine_tune(spec, weights, scaling)
        add(FINE_TUNED, f"{config.name}-fine-tuned", {n: t for n, (t, _) in tuned.items()}, per_step(tuned))
    if config.baselines.pooled:
        pooled_test, out.pooled_history = pooled(config, spec, init, scaling)
        add(POOLED, f"{config.name}-pooled", pooled_test, out.pooled_history)
    return out


def log_partners(tracker: Tracker, run_id: str, config: RunConfig, summaries: Sequence[PartnerSummary]) -> None:
    """The config as params; per partner: digest, counts and reject counts as tags, metrics and datasets."""
    private = {"private_tasks", "shared_tasks", "report_private_metrics", "export_tracking_uri"}
    tracker.log_params(run_id, config.model_dump(mode="json", exclude={"partners": {"__all__": private}}))
    tracker.set_tags(run_id, reporting.partner_tags(summaries))
    tracker.log_metrics(run_id, reporting.partner_count_metrics(summaries))
    for s in summaries:
        counts = {"molecules": s.n_molecules, "train": s.n_train, "val": s.n_val, "test": s.n_test}
        tracker.log_partner_dataset(run_id, s.name, s.digest, counts)


def log_baseline(
    tracker: Tracker,
    parent_run_id: str,
    run_name: str,
    kind: str,
    val_history: Sequence[Mapping[str, Mapping[str, float]]],
    test: Mapping[str, Mapping[str, float]],
    sizes: Mapping[str, Mapping[str, int]],
) -> str:
    """A baseline as a child run with the federated run's metric names, so the MLflow UI can compare them: the
    parent's params (config, partner counts) plus ``kind``, and its own small artifact, ``metrics.json`` (its test
    metrics and validation curve per partner; MLflow's Compare page fails on runs without artifacts)."""
    run_id = tracker.start_run(run_name, parent_run_id=parent_run_id, tags={"molfed.kind": kind})
    params = {**tracker.params(parent_run_id), "kind": kind}
    params.update({f"n_{split}.{p}": str(n) for split, by_partner in sizes.items() for p, n in by_partner.items()})
    tracker.log_params(run_id, params)
    for step, per_partner in enumerate(val_history, 1):
        tracker.log_metrics(run_id, split_metrics("val", per_partner, sizes["val"]), step=step)
    tracker.log_metrics(run_id, split_metrics("test", test, sizes["test"]))
    table = {"kind": kind, "test": test, "val_by_round": list(val_history)}
    tracker.log_json(run_id, table, "metrics.json")
    tracker.end_run(run_id)
    return run_id


def log_figures(
    tracker: Tracker,
    run_id: str,
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    metric: str,
    parity: Mapping[str, Sequence[Sequence[int]]] | None,
    edges: Sequence[float],
    task_name: str,
    unit: str | None = None,
) -> None:
    fig = plots.learning_curves(curves, metric, unit)
    tracker.log_figure(run_id, fig, "plots/learning_curves.png")
    plots.close(fig)
    if parity:
        fig = plots.parity_heatmaps(parity, edges, task_name, unit)
        tracker.log_figure(run_id, fig, "plots/parity_test.png")
        plots.close(fig)


def log_model(
    tracker: Tracker,
    run_id: str,
    config: RunConfig,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    calibration: Calibration | None = None,
) -> tuple[str, str | None]:
    return tracker.log_model(
        run_id,
        spec=spec,
        weights=weights,
        scaling=scaling,
        standardize=standardize_options(config),
        registered_model=config.tracking.registered_model,
        calibration=calibration,
    )


def publish_report(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    kinds: Sequence[str],
    round_rows: Sequence[Mapping[str, Any]],
    summaries: Sequence[PartnerSummary],
    run_link: str,
    decision: str,
    extra: str = "",
    unit: str | None = None,
) -> None:
    """Prefect artifacts: a Markdown report and a table of per-round metrics (aggregates only; ``round_rows`` as
    :func:`molfed.reporting.round_table` makes them)."""
    lines = [
        f"# Federation report\n\nMLflow run: {run_link}\n",
        reporting.results_markdown(rows, metric, kinds, unit),
        extra,
        f"\nRounds: {len(round_rows)}\n\n**Champion:** {decision}\n",
        "\n| partner | molecules | rejects | disagreeing duplicates (kept as the mean) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s.name} | {s.n_molecules} | {reporting.rejected(s.reject_counts)} | "
        f"{s.reject_counts.get(DISAGREEING, 0)} |"
        for s in summaries
    ]
    create_markdown_artifact("\n".join(lines), key="federation-report", description="molfed federation report")
    create_table_artifact([dict(r) for r in round_rows], key="round-metrics", description="per-round federated metrics")


def decide_champion(
    tracker: Tracker,
    run_id: str,
    config: RunConfig,
    version: str | None,
    champion: ChampionModel | None,
    final: Mapping[str, FinalReport],
    val_sizes: Mapping[str, int],
) -> str:
    """Promote the new model version to the champion alias only if partners' validation says it is better."""
    name, cfg = config.tracking.registered_model, config.champion
    if version is None or name is None or not cfg.enabled:
        return "champion comparison off"
    final = {n: r for n, r in final.items() if r.val}  # a partner with private tasks only has no shared metric
    new = combine_partners({n: r.val for n, r in final.items()}, val_sizes).get(cfg.metric)
    old = None
    if champion is not None and all(r.champion_val for r in final.values()):
        old = combine_partners({n: r.champion_val or {} for n, r in final.items()}, val_sizes).get(cfg.metric)
    promote, reason = decide_promotion(new, old, metric=cfg.metric, min_improvement=cfg.min_improvement)
    if promote:
        tracker.promote(name, cfg.alias, version)
    tags = {
        "molfed.champion.decision": "promoted" if promote else "kept",
        "molfed.champion.reason": reason,
        "molfed.champion.previous_version": champion.version if champion else "none",
        "molfed.champion.new_score": new,
        "molfed.champion.previous_score": old,
    }
    tracker.set_tags(run_id, tags)
    tracker.tag_model_version(name, version, tags)
    current = version if promote else (champion.version if champion else "none")
    return f"{'promoted' if promote else 'kept'}: {name}@{cfg.alias} is version {current} ({reason})"
