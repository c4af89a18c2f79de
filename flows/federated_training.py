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
from molfed.federated.types import Failure, Update
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


def _all_or_raise(futures: Mapping[str, PrefectFuture]) -> dict[str, Any]:
    return {name: future.result() for name, future in futures.items()}


@flow(name="federated-training", persist_result=False, log_prints=False)
def federated_training(config: RunConfig) -> dict[str, Any]:
    """Train a shared GNN across partners with federated averaging; return the per-partner test comparison."""
    logger = get_run_logger()
    started = time.perf_counter()
    names = [p.name for p in config.partners]
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(names)))
    retries = config.federation.partner_retries
    train_task = pt.local_update.with_options(retries=retries)
    eval_task = pt.evaluate.with_options(retries=retries)

    tracker = Tracker(resolve_tracking_uri(config.tracking.tracking_uri), config.tracking.experiment)
    tags = {"molfed.kind": coord.FEDERATED, **reporting.version_tags()}
    run_id = tracker.start_run(config.name, tags=tags)
    logger.info("MLflow run %s in experiment %s", run_id, tracker.experiment_id)
    try:
        summaries = _all_or_raise({n: pt.prepare_partner.submit(config, n) for n in names})
        tracker.log_params(run_id, config.model_dump(mode="json"))
        tracker.set_tags(run_id, reporting.partner_tags(list(summaries.values())))
        tracker.log_metrics(run_id, reporting.partner_count_metrics(list(summaries.values())))
        for s in summaries.values():
            counts = {"molecules": s.n_molecules, "train": s.n_train, "val": s.n_val, "test": s.n_test}
            tracker.log_partner_dataset(run_id, s.name, s.digest, counts)
        progress.advance("partners", f"{len(names)} partners ready")

        task_names = [t.name for t in config.tasks]
        task_types = [t.type for t in config.tasks]
        moments = _all_or_raise({n: pt.label_moments.submit(config, n) for n in names})
        scaling = combine_moments(list(moments.values()), len(task_names))
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
        init = coord.initial_weights(spec, config.seed)
        weights = init
        strategy = build_strategy(config.federation.strategy)
        metric = coord.primary_metric(task_types)
        sizes = {
            "val": {s.name: s.n_val for s in summaries.values()},
            "test": {s.name: s.n_test for s in summaries.values()},
        }
        val_history: list[dict[str, dict[str, float]]] = []

        progress.stage("rounds", config.federation.rounds)
        for r in range(1, config.federation.rounds + 1):
            options = strategy.fit_options(r)
            futures = {n: train_task.submit(config, n, spec, weights, scaling, r, options) for n in names}
            updates, failures = _gather(futures)
            for f in failures:
                logger.warning("round %d: partner %s failed: %s", r, f.partner, f.reason)
            outcome = ct.aggregate(strategy, r, weights, list(updates.values()), failures, config.quorum)
            weights = outcome.weights
            evals, _ = _gather({n: eval_task.submit(config, n, spec, weights, scaling, ["val"], r) for n in names})
            val = {n: e["val"] for n, e in evals.items()}
            val_history.append(val)
            accepted: list[Update] = [updates[n] for n in outcome.accepted]
            round_metrics = {
                **coord.train_metrics(accepted, len(names)),
                **coord.split_metrics("val", val, sizes["val"]),
            }
            ct.log_round(tracker, run_id, r, round_metrics, weights)
            progress.advance(
                "rounds", f"round {r}: val {metric} {round_metrics.get(f'val_{metric}', float('nan')):.3f}"
            )

        final = _all_or_raise({n: pt.evaluate.submit(config, n, spec, weights, scaling, ["test"], 0) for n in names})
        test = {n: {coord.FEDERATED: e["test"]} for n, e in final.items()}
        tracker.log_metrics(
            run_id, coord.split_metrics("test", {n: e["test"] for n, e in final.items()}, sizes["test"])
        )
        kinds = [coord.FEDERATED]

        local_curves: dict[str, list[dict[str, float]]] = {}
        if config.baselines.local_only:
            kinds.append(coord.LOCAL_ONLY)
            local = _all_or_raise({n: pt.local_only.submit(config, n, spec, init, scaling) for n in names})
            local_id = tracker.start_run(
                f"{config.name}-local-only", parent_run_id=run_id, tags={"molfed.kind": coord.LOCAL_ONLY}
            )
            for n, (metrics, curve) in local.items():
                test[n][coord.LOCAL_ONLY] = metrics
                local_curves[n] = curve
                for step, v in enumerate(curve, 1):
                    tracker.log_metrics(local_id, {f"val_{k}.{n}": x for k, x in v.items()}, step=step)
            tracker.log_metrics(
                local_id, coord.split_metrics("test", {n: x[0] for n, x in local.items()}, sizes["test"])
            )
            tracker.end_run(local_id)
            progress.advance("baselines", "local-only")
        pooled_history: list[dict[str, dict[str, float]]] = []
        if config.baselines.pooled:
            kinds.append(coord.POOLED)
            pooled_test, pooled_history = ct.pooled(config, spec, init, scaling)
            pooled_id = tracker.start_run(
                f"{config.name}-pooled", parent_run_id=run_id, tags={"molfed.kind": coord.POOLED}
            )
            for step, per_partner in enumerate(pooled_history, 1):
                tracker.log_metrics(pooled_id, coord.split_metrics("val", per_partner, sizes["val"]), step=step)
            tracker.log_metrics(pooled_id, coord.split_metrics("test", pooled_test, sizes["test"]))
            tracker.end_run(pooled_id)
            for n, metrics in pooled_test.items():
                test[n][coord.POOLED] = metrics
            progress.advance("baselines", "pooled")

        curves = reporting.curves_from_history(val_history, local_curves, pooled_history, metric)
        fig = plots.learning_curves(curves, metric)
        tracker.log_figure(run_id, fig, "plots/learning_curves.png")
        plots.close(fig)
        regression = [i for i, t in enumerate(task_types) if t == "regression"]
        if regression:
            j = regression[0]
            edges = plots.parity_edges(scaling["mean"][j], scaling["std"][j])
            counts = _all_or_raise(
                {n: pt.parity_counts.submit(config, n, spec, weights, scaling, j, edges) for n in names}
            )
            fig = plots.parity_heatmaps(counts, edges, task_names[j])
            tracker.log_figure(run_id, fig, "plots/parity_test.png")
            plots.close(fig)

        std = config.data.standardize
        from molfed.chem.standardize import StandardizeOptions

        model_uri, version = tracker.log_model(
            run_id,
            spec=spec,
            weights=weights,
            scaling=scaling,
            standardize=StandardizeOptions(**std.model_dump()),
            registered_model=config.tracking.registered_model,
        )
        rows = coord.comparison_rows(test, metric, kinds)
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
