"""Partner-side jobs with the run's settings (local and sites mode) and :class:`LocalPartners`, the local-mode pool.

Tasks receive the run config and a partner *name*; data stays in the partner's process and workspace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from molfed.config import PartnerConfig, RunConfig
from molfed.errors import MolfedError
from molfed.federated import baselines, calibration, faults, jobs
from molfed.federated import partner as p
from molfed.federated.calls import CallPolicy, call_each
from molfed.federated.coordinator import primary_metric
from molfed.federated.types import Failure, Weights
from molfed.models.model import ModelSpec
from molfed.preparation import prepare_partner_data, train_settings
from tasks import integrity


def load_partner(config: RunConfig, cfg: PartnerConfig) -> p.PartnerData:
    """Prepare (or fetch from this process / the workspace cache) one partner's data with the run's options
    (:func:`molfed.preparation.prepare_partner_data`), its graph cache filled over Dask first when
    ``partners[i].dask`` asks."""
    assert cfg.path is not None, "a partner's library path is known only on its side"
    if cfg.dask is not None:  # partners[i].dask: fill the graph cache over a Dask cluster
        from tasks import dask_featurize  # Dask's import (~2 s of CPU) only where a partner uses it

        dask_featurize.ensure_featurized(config, cfg)
    return prepare_partner_data(config, cfg)


def round_from_config(
    config: RunConfig,
    data: p.PartnerData,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    server_round: int,
    options: Mapping[str, float],
    tensors: Mapping[str, Weights] | None,
    state_key: str,
    val_as_sums: bool | None = None,
) -> jobs.RoundReply:
    """A partner's round with the run's settings (shared by local and sites mode). ``val_as_sums``: whether the
    federation runs secure aggregation (default: ``config``'s; a site's view of the config has it off, so the site
    passes the federation's)."""
    return jobs.round_job(
        data,
        spec=spec,
        weights=weights,
        scaling=scaling,
        settings=train_settings(config),
        seed=config.seed,
        options=options,
        tensors=tensors,
        server_round=server_round,
        state_key=state_key,
        device=config.device,
        # under secure aggregation the evaluation joins the masked sum (molfed.federated.val_sums)
        val_as_sums=config.secure_aggregation.enabled if val_as_sums is None else val_as_sums,
    )


def local_only_from_config(
    config: RunConfig, data: p.PartnerData, spec: ModelSpec, init: Weights, scaling: Mapping[str, Sequence[float]]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The local-only baseline with the federation's budget and seed (shared by local and sites mode)."""
    return baselines.local_only_baseline(
        data,
        spec=spec,
        init_weights=init,
        scaling=scaling,
        settings=train_settings(config),
        rounds=config.federation.rounds,
        seed=p.derive_seed(config.seed, "local-only", data.name),
        device=config.device,
        **selection(config),
    )


def selection(config: RunConfig) -> dict[str, Any]:
    """The federation's model selection as baseline arguments (the baselines select the way the run does)."""
    fed = config.federation
    if fed.selection != "best_val":
        return {"select": None, "patience": None}
    return {"select": primary_metric([t.type for t in config.tasks]), "patience": fed.patience}


def fine_tune_from_config(
    config: RunConfig, data: p.PartnerData, spec: ModelSpec, weights: Weights, scaling: Mapping[str, Sequence[float]]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The partner's fine-tuning of the kept global model (``baselines.fine_tune_epochs``), selected on its own
    validation split by the run's headline metric."""
    return baselines.fine_tune(
        data,
        spec=spec,
        weights=weights,
        scaling=scaling,
        settings=train_settings(config),
        epochs=config.baselines.fine_tune_epochs,
        seed=p.derive_seed(config.seed, "fine-tune", data.name),
        metric=primary_metric([t.type for t in config.tasks]),
        device=config.device,
    )


def partner_config(config: RunConfig, name: str) -> PartnerConfig:
    return next(x for x in config.partners if x.name == name)


def partner_data(config: RunConfig, name: str) -> p.PartnerData:
    return load_partner(config, partner_config(config, name))


def finish_from_config(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    parity_task: int | None,
    parity_edges: Sequence[float],
    champion: tuple[ModelSpec, Weights, Mapping[str, Sequence[float]]] | None,
    state_key: str,
) -> jobs.FinalReport:
    """A partner's final job with its private-task choices (shared by local and sites mode)."""
    cfg = partner_config(config, name)
    c = config.calibration  # the partner's exported model is calibrated on its own data when the run calibrates
    levels = tuple(c.levels) if c.active(config.mode) else ()
    return jobs.finish_job(
        load_partner(config, cfg),
        spec=spec,
        weights=weights,
        scaling=scaling,
        parity_task=parity_task,
        parity_edges=parity_edges,
        champion=champion,
        device=config.device,
        state_key=state_key,
        private=jobs.PrivateOptions(
            cfg.report_private_metrics,
            own_mlflow(cfg.export_tracking_uri, name, state_key),
            calibration_levels=levels,
            domain_level=c.domain_level,
        ),
    )


def own_mlflow(tracking_uri: str | None, partner: str, federation_run: str) -> jobs.Publish | None:
    """Log a partner's exported model to its own MLflow at ``tracking_uri`` (None: nowhere)."""
    if not tracking_uri:
        return None
    from molfed.tracking import log_partner_model

    def publish(directory: Path, metrics: Mapping[str, Mapping[str, float]]) -> str:
        return log_partner_model(
            tracking_uri, directory, partner=partner, federation_run=federation_run, metrics=metrics
        )

    return publish


def prepare(config: RunConfig, name: str) -> jobs.Prepared:
    return jobs.prepare(partner_data(config, name))


def partner_round(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    server_round: int,
    options: Mapping[str, float],
    tensors: Mapping[str, Weights],
    state_key: str,
) -> jobs.RoundReply:
    faults.inject(name, "round", server_round)
    reply = round_from_config(
        config, partner_data(config, name), spec, weights, scaling, server_round, options, tensors, state_key
    )
    # the flow passes its run id as state_key; the update is signed for it (or held back for secure aggregation)
    return integrity.seal(config, name, reply, run_id=state_key, server_round=server_round)


def finish(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    parity_task: int | None,
    parity_edges: Sequence[float],
    champion: Any,
    state_key: str,
) -> jobs.FinalReport:
    faults.inject(name, "finish")
    return finish_from_config(config, name, spec, weights, scaling, parity_task, parity_edges, champion, state_key)


def local_only(
    config: RunConfig,
    name: str,
    spec: ModelSpec,
    init_weights: Weights,
    scaling: Mapping[str, Sequence[float]],
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Train on this partner alone with the federation's budget; return test metrics and per-round val metrics."""
    return local_only_from_config(config, partner_data(config, name), spec, init_weights, scaling)


def fine_tuned(
    config: RunConfig, name: str, spec: ModelSpec, weights: Weights, scaling: Mapping[str, Sequence[float]]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Fine-tune the kept global model on this partner alone; return test metrics and per-epoch val metrics."""
    return fine_tune_from_config(config, partner_data(config, name), spec, weights, scaling)


def calibrate(
    config: RunConfig,
    name: str,
    step: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    payload: Mapping[str, Any],
    state_key: str,
) -> Any:
    """A partner's calibration ``step`` (:mod:`molfed.federated.calibration`); under secure aggregation its sums are
    held for the secure sum and the reply carries nothing."""
    faults.inject(name, "calibrate")
    data = partner_data(config, name)
    out = calibration.run_step(
        data,
        step,
        spec=spec,
        weights=weights,
        scaling=scaling,
        payload=payload,
        device=config.device,
        state_key=state_key,
    )
    if config.secure_aggregation.enabled and step != "measure":
        calibration.hold(name, out, run_id=state_key, step=step)
        return None
    return out


def threads_per_partner(concurrent: int) -> int:
    """torch threads for each of ``concurrent`` partner tasks training at once on this process's cores (>= 1).

    torch's default (one thread per core in every task) oversubscribes the cores as soon as two partners train
    together; ``bench/scaling.py`` shows the difference.
    """
    return max(1, len(os.sched_getaffinity(0)) // max(1, concurrent))


def _not_a_user_mistake(exc: BaseException) -> bool:
    """Retry outages and crashes, not user mistakes (a bad library stays bad)."""
    return not isinstance(exc, MolfedError)


class LocalPartners:
    """Every partner in this process, each job in its own thread under the engine's call policy
    (:func:`molfed.federated.calls.call_each`: concurrent, ``federation.task_timeout_s`` per attempt,
    ``federation.partner_retries`` retries, failures as data). Prefect sees the flow run and its log lines, not one
    task run per partner job: retries and timeouts are the engine's, not the transport's."""

    share_cores = True
    """Before each fan-out, give torch :func:`threads_per_partner` threads (False: torch's own default)."""

    def __init__(self, config: RunConfig, tracker: object = None, run_id: str = ""):
        """``tracker`` and ``run_id`` are unused: partners in this process report through return values."""
        self.config = config
        self.names = [x.name for x in config.partners]
        fed = config.federation
        self.policy = CallPolicy(fed.partner_retries, fed.task_timeout_s, _not_a_user_mistake)

    def publish(self, spec: ModelSpec, scaling: Mapping[str, Sequence[float]], weights: Weights) -> None:
        """Nothing to publish: partners in this process receive the plan as arguments."""

    def close(self) -> None:
        """Nothing to close."""

    def _share(self, concurrent: int) -> None:
        if self.share_cores:
            torch.set_num_threads(threads_per_partner(concurrent))  # process-wide, as concurrent jobs share it

    def _call(
        self, fn: Any, names: Sequence[str], *args: Any, policy: CallPolicy | None = None
    ) -> tuple[dict[str, Any], list[Failure]]:
        self._share(len(names))
        return call_each({n: partial(fn, self.config, n, *args) for n in names}, policy or self.policy)

    def _each(self, fn: Any, *args: Any) -> dict[str, Any]:
        """Every partner must succeed: in one process a failure is a user mistake (bad library), not an outage."""
        self._share(len(self.names))
        errors: dict[str, BaseException] = {}
        results, failures = call_each(
            {n: partial(fn, self.config, n, *args) for n in self.names}, CallPolicy(), errors=errors
        )
        if failures:
            raise errors[failures[0].partner]  # the partner's own error (e.g. an InputError naming file and row)
        return results

    def prepare(self) -> tuple[dict[str, jobs.Prepared], list[Failure]]:
        return self._each(prepare), []

    def round(
        self,
        server_round: int,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        options: Mapping[str, float],
        tensors: Mapping[str, Weights],
        state_key: str,
        partners: Sequence[str] | None = None,
    ) -> tuple[dict[str, jobs.RoundReply], list[Failure]]:
        """Train the round at ``partners`` (the round's sample; default: every partner)."""
        asked = self.names if partners is None else partners
        return self._call(partner_round, asked, spec, weights, scaling, server_round, options, tensors, state_key)

    def finish(
        self,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        parity_task: int | None,
        parity_edges: Sequence[float],
        champion: Any,
        state_key: str = "default",
        server_round: int | None = None,
        local_only: bool = True,
    ) -> tuple[dict[str, jobs.FinalReport], list[Failure]]:
        """Final reports on ``weights``; ``state_key`` (the run id, as in :meth:`round`) finds partners' private
        heads. ``server_round`` and ``local_only`` matter to site pools only (here the weights are arguments and the
        local-only baseline is its own call)."""
        parts = (champion.spec, champion.weights, champion.scaling) if champion else None
        args = (spec, weights, scaling, parity_task, parity_edges, parts, state_key)
        return self._call(finish, self.names, *args)

    def calibrate(
        self,
        step: str,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        payload: Mapping[str, Any],
        state_key: str = "default",
    ) -> tuple[dict[str, Any], list[Failure]]:
        """A calibration step at every partner (:class:`molfed.federated.calibration.CalibrationPool`)."""
        return self._call(calibrate, self.names, step, spec, weights, scaling, payload, state_key)

    def local_only(self, spec: ModelSpec, init: Weights, scaling: Mapping[str, Sequence[float]]) -> dict[str, Any]:
        return self._each(local_only, spec, init, scaling)

    def fine_tune(self, spec: ModelSpec, weights: Weights, scaling: Mapping[str, Sequence[float]]) -> dict[str, Any]:
        return self._each(fine_tuned, spec, weights, scaling)
