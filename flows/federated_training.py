"""The federated training flow: prepare partners, run rounds, compare with baselines, log everything to MLflow.

Its single parameter is the validated :class:`~molfed.config.RunConfig` (names and paths only; Prefect stores it).
The same code runs both modes: partners are reached through a partner pool — in-process Prefect tasks
(``mode: local``) or each partner's own worker via deployments and MLflow artifacts (``mode: sites``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic.json_schema import SkipJsonSchema

from flows.contributions import leave_one_out
from molfed import layout, plots, progress, reporting
from molfed.config import RunConfig
from molfed.errors import ConfigError
from molfed.federated import coordinator as coord
from molfed.federated import dp_budget as dp
from molfed.federated import engine, val_sums
from molfed.federated.checkpoint import Sections
from molfed.federated.jobs import private_metrics
from molfed.federated.partner import check_local_device, combine_moments
from molfed.federated.sampling import sample_partners
from molfed.federated.strategies import build_strategy
from molfed.federated.types import QuorumError
from molfed.tracking import Tracker, resolve_tracking_uri
from tasks import calibration as cal_t
from tasks import coordinator as ct
from tasks import integrity
from tasks import value as vt
from tasks.partner import LocalPartners
from tasks.sites import SitePartners

POOLS: dict[str, Any] = {"local": LocalPartners, "sites": SitePartners}
"""``mode`` -> partner pool (``pool(config, tracker, run_id)``; the engine's ``PartnerPool`` plus prepare, publish,
finish, local_only, close and, where ``baselines.fine_tune_epochs`` is allowed, fine_tune). Adding a transport: one
pool class and one line here (and the mode in the config)."""


def run_name() -> str:
    """The flow run's name, which the MLflow run takes too: the config's name and the start time (local)."""
    config = flow_run.parameters.get("config")
    name = config.name if isinstance(config, RunConfig) else (config or {}).get("name", "federation")
    return f"{name} {time.strftime('%Y-%m-%d %H:%M:%S')}"


@flow(name="federated-training", flow_run_name=run_name, persist_result=False, log_prints=False)
def federated_training(config: RunConfig, resume_run_id: SkipJsonSchema[str | None] = None) -> dict[str, Any]:
    """Train a shared GNN across partners with federated averaging; return the per-partner test comparison.

    With ``resume_run_id``, continue that stopped run from its last checkpoint, in the same MLflow run.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    names = [p.name for p in config.partners]
    try:  # before anything is started: an unknown strategy option is a config mistake
        strategy = build_strategy(config.federation.strategy, **config.federation.strategy_options)
    except ValueError as exc:
        raise ConfigError(f"federation.strategy_options: {exc}") from None
    if config.mode == "local":  # the partners train in this process: its devices are theirs
        check_local_device(config.device)
    privacy = config.privacy
    strategy = dp.wrap_strategy(
        strategy, **privacy.model_dump(include={"mode", "noise_multiplier", "max_grad_norm", "noise_seed"})
    )
    tracker = Tracker(resolve_tracking_uri(config.tracking.tracking_uri), config.tracking.experiment)
    saved = engine.reopen(tracker, resume_run_id) if resume_run_id else None
    run_id = resume_run_id or tracker.start_run(
        flow_run.name or config.name,
        tags={"molfed.kind": coord.FEDERATED, "molfed.mode": config.mode, **reporting.version_tags()},
        parent_run_id=config.tracking.parent_run_id,
    )
    logger.info("MLflow run %s in experiment %s (%s mode)", run_id, tracker.experiment_id, config.mode)
    if saved is None:  # resume rebuilds the run from it; site agents fetch it
        tracker.log_json(run_id, config.model_dump(mode="json"), layout.CONFIG)
    pool = POOLS[config.mode](config, tracker, run_id)
    loop = None
    try:
        strategy = integrity.guard(strategy, config, tracker, run_id)  # signatures, screens, secure aggregation
        prepared, failures = pool.prepare()
        for f in failures:
            logger.warning("partner %s sits this run out: %s", f.partner, f.reason)
            tracker.set_tags(run_id, {f"prepare.failed.{f.partner}": f.reason[:500]})
        if len(prepared) < config.quorum:
            reasons = "; ".join(f"{f.partner}: {f.reason}" for f in failures)
            raise QuorumError(f"{len(prepared)} partner(s) ready, quorum is {config.quorum} ({reasons})")
        names = [n for n in names if n in prepared]
        summaries = [prepared[n].summary for n in names]
        if saved is None:
            ct.log_partners(tracker, run_id, config, summaries)
        sizes = {split: {s.name: getattr(s, f"n_{split}") for s in summaries} for split in ("val", "test")}
        overlap_md = vt.log_heterogeneity(tracker, run_id, config, {n: prepared[n].moments for n in names})
        progress.advance("partners", f"{len(names)} partners ready")
        budget = dp.BudgetHook(
            privacy.mode,
            noise_multiplier=privacy.noise_multiplier,
            delta=privacy.delta,
            budget=privacy.epsilon_budget,
            batch_size=config.train.batch_size,
            epochs=config.train.epochs,
            n_train={s.name: s.n_train for s in summaries},
        )
        budget.check_rounds(config.federation.rounds)  # before any round: privacy spent on a doomed run is lost

        task_names, task_types = [t.name for t in config.tasks], [t.type for t in config.tasks]
        scaling = combine_moments([prepared[n].moments for n in names], len(task_names))
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
        pool.publish(spec, scaling, init)
        metric = coord.primary_metric(task_types)
        fed = config.federation
        sections = Sections()  # named extra state checkpointed each round: sections.add(name, save, load)
        sections.add("privacy", budget.state_dict, budget.load_state_dict)
        fingerprint = {"digests": {s.name: s.digest for s in summaries}, "scaling": scaling}
        loop = engine.RoundLoop(
            log=tracker,
            run_id=run_id,
            strategy=strategy,
            names=names,
            quorum=config.quorum,
            sizes=sizes,
            metric=metric,
            fingerprint=fingerprint,
            sections=sections,
            hooks=[budget],
            sample=partial(
                sample_partners,
                list(names),
                seed=config.seed,
                fraction_fit=fed.fraction_fit,
                min_fit_partners=fed.min_fit_partners,
            ),
            min_partners=fed.min_partners,
            logger=logger,
            select=fed.selection == "best_val",
            patience=fed.patience,
            select_on=val_sums.selection_metric(metric) if config.secure_aggregation.enabled else metric,
        )
        loop.start(init, saved)
        progress.stage("rounds", config.federation.rounds)
        loop.run(pool, spec, scaling, config.federation.rounds)
        weights = loop.weights

        sampled = {row["round"]: row["sampled"].split(", ") for row in loop.history.rows}
        tracker.log_json(run_id, sampled, layout.SAMPLED)
        champion = (
            tracker.champion(config.tracking.registered_model, config.champion.alias)
            if (config.champion.enabled and config.tracking.registered_model)
            else None
        )
        j = next((i for i, t in enumerate(task_types) if t == "regression"), None)
        bins = plots.parity_bins(min(sizes["test"].values(), default=0))  # the smallest partner's cells stay visible
        edges = plots.parity_edges(scaling["mean"][j], scaling["std"][j], bins) if j is not None else []
        unit = config.tasks[j].unit if j is not None else None
        final, failures = pool.finish(spec, weights, scaling, j, edges, champion, run_id, loop.done)
        loop.check_quorum("finish", list(final), failures)
        names = [n for n in names if n in final]
        loop.record_val(loop.done, {n: final[n].val for n in names})
        chosen, chosen_weights = loop.selected()
        if chosen != loop.done:  # an earlier round validated better: test, report and register that model
            weights = chosen_weights
            final, failures = pool.finish(spec, weights, scaling, j, edges, champion, run_id, chosen, local_only=False)
            loop.check_quorum("finish", list(final), failures)
            names = [n for n in names if n in final]
        tracker.log_metrics(run_id, {"selected_round": chosen, "rounds_run": loop.done})
        why = loop.best.describe(loop.select_on, chosen, loop.done, fed.rounds)
        tracker.set_tags(run_id, {"molfed.selection": why})
        logger.info("kept the global model of round %d of %d (%s)", chosen, loop.done, fed.selection)
        tracker.log_metrics(run_id, coord.split_metrics("test", {n: final[n].test for n in names}, sizes["test"]))
        tracker.log_metrics(run_id, private_metrics(final))  # partners that allow it; aggregates only
        test = {n: {coord.FEDERATED: final[n].test} for n in names}
        refs = ct.compare(config, pool, tracker, run_id, spec, init, weights, scaling, sizes, test)
        curves = reporting.curves_from_history(loop.history.val, refs.local_history, refs.pooled_history, metric)
        parity = {n: final[n].parity for n in names} if j is not None else None
        ct.log_figures(tracker, run_id, curves, metric, parity, edges, task_names[j or 0], unit)
        nested = config.tracking.parent_run_id is not None  # a leave-one-out federation: an estimate, not a model
        calibration, calibration_md = (
            (None, "") if nested else cal_t.calibrate(pool, config, tracker, run_id, spec, weights, scaling)
        )  # the kept model's intervals, sets and domain, from partners' aggregates
        model_uri, version = (
            (None, None) if nested else ct.log_model(tracker, run_id, config, spec, weights, scaling, calibration)
        )
        decision = ct.decide_champion(tracker, run_id, config, version, champion, final, sizes["val"])
        rows = coord.comparison_rows(test, metric, refs.kinds, sizes["test"])
        loo = ""
        if config.baselines.contributions:
            full = {n: t[coord.FEDERATED][metric] for n, t in test.items() if metric in t[coord.FEDERATED]}
            loo = leave_one_out(config, tracker, run_id, full, metric, sizes["test"], federated_training)
        _, value_md = vt.report_value(tracker, run_id, test, rows, metric, refs.kinds, overlap_md, loo)
        tracker.log_json(run_id, {"metric": metric, "rows": rows}, layout.RESULTS)
        ct.publish_report(
            rows,
            metric,
            refs.kinds,
            reporting.round_table(loop.history.rows, loop.history.val, metric),
            summaries,
            tracker.run_link(run_id),
            decision,
            value_md + calibration_md,
            unit,
        )
        pool.close()
        tracker.end_run(run_id)
    except QuorumError as exc:
        tracker.end_run(run_id, "FAILED")
        kept = loop is not None and loop.done >= 0
        hint = f"checkpoint after round {loop.done} kept: molfed resume {run_id}" if kept else "start it again"
        raise QuorumError(f"{exc}; {hint}") from None
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
        "champion": decision,
        "metric": metric,
        "kinds": refs.kinds,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
