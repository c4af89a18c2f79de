"""The federated training flow: prepare partners, run rounds, compare with baselines, log everything to MLflow.

Its single parameter is the validated :class:`~molfed.config.RunConfig` (names and paths only; Prefect stores it).
Partner tasks receive partner names; data never becomes a parameter or a persisted result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture

from molfed import plots, progress, reporting
from molfed.config import RunConfig
from molfed.federated import coordinator as coord
from molfed.federated.partner import combine_moments
from molfed.federated.strategies import build_strategy
from molfed.federated.types import Failure
from molfed.tracking import Tracker, resolve_tracking_uri
from tasks import coordinator as ct
from tasks import partner as pt


def _gather(futures: Mapping[str, PrefectFuture]) -> tuple[dict[str, Any], list[Failure]]:
    """Results by partner; a failed partner becomes a :class:`Failure` (failures are data, not crashes)."""
    results, failures = {}, []
    for name, future in futures.items():
        future.wait()
        if future.state.is_completed():
            results[name] = future.result()
        else:
            failures.append(Failure(name, future.state.message or "failed"))
    return results, failures


def _each(task: Any, config: RunConfig, *args: Any) -> dict[str, Any]:
    """Run ``task(config, partner, *args)`` for every partner concurrently; any failure raises."""
    futures = {p.name: task.submit(config, p.name, *args) for p in config.partners}
    return {name: future.result() for name, future in futures.items()}


@flow(name="federated-training", persist_result=False, log_prints=False)
def federated_training(config: RunConfig) -> dict[str, Any]:
    """Train a shared GNN across partners with federated averaging; return the per-partner test comparison."""
    logger = get_run_logger()
    started = time.perf_counter()
    names = [p.name for p in config.partners]
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(names)))  # partners train concurrently
    train_task = pt.local_update.with_options(retries=config.federation.partner_retries)
    eval_task = pt.evaluate.with_options(retries=config.federation.partner_retries)

    tracker = Tracker(resolve_tracking_uri(config.tracking.tracking_uri), config.tracking.experiment)
    run_id = tracker.start_run(config.name, tags={"molfed.kind": coord.FEDERATED, **reporting.version_tags()})
    logger.info("MLflow run %s in experiment %s", run_id, tracker.experiment_id)
    try:
        summaries = _each(pt.prepare_partner, config)
        ct.log_partners(tracker, run_id, config, list(summaries.values()))
        sizes = {split: {s.name: getattr(s, f"n_{split}") for s in summaries.values()} for split in ("val", "test")}
        progress.advance("partners", f"{len(names)} partners ready")

        task_names, task_types = [t.name for t in config.tasks], [t.type for t in config.tasks]
        scaling = combine_moments(list(_each(pt.label_moments, config).values()), len(task_names))
        m = config.model
        spec = coord.model_spec(
            encoder=m.encoder,
            hidden_channels=m.hidden_channels,
            num_layers=m.num_layers,
            dropout=m.dropout,
            readout=m.readout,
            head_layers=m.head_layers,
            task_names=task_names,
            task_types=task_types,
        )
        init = weights = coord.initial_weights(spec, config.seed)
        strategy = build_strategy(config.federation.strategy)
        metric = coord.primary_metric(task_types)
        val_history: list[dict[str, dict[str, float]]] = []

        progress.stage("rounds", config.federation.rounds)
        for r in range(1, config.federation.rounds + 1):
            options = strategy.fit_options(r)
            updates, failures = _gather(
                {n: train_task.submit(config, n, spec, weights, scaling, r, options) for n in names}
            )
            for f in failures:
                logger.warning("round %d: partner %s failed: %s", r, f.partner, f.reason)
            outcome = ct.aggregate(strategy, r, weights, list(updates.values()), failures, config.quorum)
            weights = outcome.weights
            evals, _ = _gather({n: eval_task.submit(config, n, spec, weights, scaling, ["val"], r) for n in names})
            val_history.append({n: e["val"] for n, e in evals.items()})
            accepted = [updates[n] for n in outcome.accepted]
            metrics = {
                **coord.train_metrics(accepted, len(names)),
                **coord.split_metrics("val", val_history[-1], sizes["val"]),
            }
            ct.log_round(tracker, run_id, r, metrics, weights)
            progress.advance("rounds", f"round {r}: val {metric} {metrics.get(f'val_{metric}', float('nan')):.3f}")

        final = {n: e["test"] for n, e in _each(pt.evaluate, config, spec, weights, scaling, ["test"], 0).items()}
        tracker.log_metrics(run_id, coord.split_metrics("test", final, sizes["test"]))
        test = {n: {coord.FEDERATED: final[n]} for n in names}
        kinds, local_history, pooled_history = [coord.FEDERATED], {}, []
        if config.baselines.local_only:
            local = _each(pt.local_only, config, spec, init, scaling)
            local_history = {n: curve for n, (_, curve) in local.items()}
            per_round = [{n: local_history[n][i] for n in names} for i in range(config.federation.rounds)]
            ct.log_baseline(
                tracker,
                run_id,
                f"{config.name}-local-only",
                coord.LOCAL_ONLY,
                per_round,
                {n: t for n, (t, _) in local.items()},
                sizes,
            )
            for n, (t, _) in local.items():
                test[n][coord.LOCAL_ONLY] = t
            kinds.append(coord.LOCAL_ONLY)
            progress.advance("baselines", "local-only done")
        if config.baselines.pooled:
            pooled_test, pooled_history = ct.pooled(config, spec, init, scaling)
            ct.log_baseline(tracker, run_id, f"{config.name}-pooled", coord.POOLED, pooled_history, pooled_test, sizes)
            for n, t in pooled_test.items():
                test[n][coord.POOLED] = t
            kinds.append(coord.POOLED)
            progress.advance("baselines", "pooled done")

        curves = reporting.curves_from_history(val_history, local_history, pooled_history, metric)
        j = next((i for i, t in enumerate(task_types) if t == "regression"), None)
        edges = plots.parity_edges(scaling["mean"][j], scaling["std"][j]) if j is not None else []
        parity = _each(pt.parity_counts, config, spec, weights, scaling, j, edges) if j is not None else None
        ct.log_figures(tracker, run_id, curves, metric, parity, edges, task_names[j or 0])
        model_uri, version = ct.log_model(tracker, run_id, config, spec, weights, scaling)
        rows = coord.comparison_rows(test, metric, kinds, sizes["test"])
        tracker.log_text(run_id, reporting.results_markdown(rows, metric, kinds), "results.md")
        tracker.log_json(run_id, {"metric": metric, "rows": rows}, "results.json")
        tracker.end_run(run_id)
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    return {
        "run_id": run_id,
        "experiment_id": tracker.experiment_id,
        "tracking_uri": tracker.tracking_uri,
        "model_uri": model_uri,
        "registered_model": config.tracking.registered_model,
        "model_version": version,
        "metric": metric,
        "kinds": kinds,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
