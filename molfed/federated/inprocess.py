"""The engine in one process, without Prefect or MLflow: a partner pool over prepared :class:`PartnerData` and a run
log in memory.

Tests, poisoning drills and benchmarks build the product's :class:`~molfed.federated.engine.RoundLoop` with these,
so what they measure is the loop ``molfed run`` runs. :func:`run_federation` is the short way to do that.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from molfed.chem.standardize import StandardizeOptions
from molfed.federated import calibration, jobs
from molfed.federated import coordinator as coord
from molfed.federated import partner as p
from molfed.federated.engine import RoundHook, RoundLoop, reopen
from molfed.federated.strategies import Strategy
from molfed.federated.types import Failure, Update, Weights
from molfed.models.model import ModelSpec

Seal = Callable[[Update, int, Weights], Update]
"""``(update, round, global weights) -> update as it leaves the partner`` (signing, masking, or an attack)."""


class InProcessPool:
    """Every partner's round job in this process, one after the other; a job that raises is a :class:`Failure`.

    ``seal`` is applied to each update as it leaves its partner (e.g.
    :func:`~molfed.federated.sealing.seal_update`, or a drill's attack); ``fail(name, round)`` may raise to inject
    a partner failure."""

    def __init__(
        self,
        partners: Sequence[p.PartnerData],
        *,
        settings: p.TrainSettings,
        seed: int,
        device: str = "cpu",
        seal: Seal | None = None,
        fail: Callable[[str, int], None] | None = None,
    ):
        self.partners = {d.name: d for d in partners}
        self.settings, self.seed, self.device, self.seal, self.fail = settings, seed, device, seal, fail

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
        replies, failures = {}, []
        for name in self.partners if partners is None else partners:
            try:
                if self.fail is not None:
                    self.fail(name, server_round)
                reply = jobs.round_job(
                    self.partners[name],
                    spec=spec,
                    weights=weights,
                    scaling=scaling,
                    settings=self.settings,
                    seed=self.seed,
                    server_round=server_round,
                    options=options,
                    tensors=tensors,
                    state_key=state_key,
                    device=self.device,
                )
                if self.seal is not None:
                    reply = jobs.RoundReply(self.seal(reply.update, server_round, weights), reply.incoming_val)
            except Exception as exc:  # failures are data: the engine's quorum decides
                failures.append(Failure(name, f"{type(exc).__name__}: {exc}"))
            else:
                replies[name] = reply
        return replies, failures

    def calibrate(
        self,
        step: str,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        payload: Mapping[str, Any],
        state_key: str = "in-process",
    ) -> tuple[dict[str, Any], list[Failure]]:
        """A calibration step at every partner (:class:`~molfed.federated.calibration.CalibrationPool`); a partner
        that raises is a :class:`Failure`."""
        replies, failures = {}, []
        for name, data in self.partners.items():
            try:
                replies[name] = calibration.run_step(
                    data,
                    step,
                    spec=spec,
                    weights=weights,
                    scaling=scaling,
                    payload=payload,
                    device=self.device,
                    state_key=state_key,
                )
            except Exception as exc:  # failures are data
                failures.append(Failure(name, f"{type(exc).__name__}: {exc}"))
        return replies, failures

    def evaluate(
        self, spec: ModelSpec, weights: Weights, scaling: Mapping[str, Sequence[float]], split: str = "val"
    ) -> dict[str, dict[str, float]]:
        """``{partner: metrics}`` of ``weights`` on each partner's ``split``."""
        return {
            n: p.evaluate_partner(d, spec=spec, weights=weights, scaling=scaling, splits=(split,), device=self.device)[
                split
            ]
            for n, d in self.partners.items()
        }


@dataclass
class MemoryRun:
    status: str = "RUNNING"
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """``{key: [(step, value), ...]}`` in logging order."""
    tags: dict[str, str] = field(default_factory=dict)
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    weights: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    """Global weights by round (as :meth:`MemoryRunLog.log_round` stored them)."""
    committed: int | None = None
    skip: set[tuple[str, int]] = field(default_factory=set)
    """(key, step) pairs held when the run was reopened: not logged again."""


class MemoryRunLog:
    """A :class:`~molfed.federated.engine.RunLog` in memory, with MLflow's semantics where the engine relies on
    them (non-finite metrics are not stored; a reopened run does not log a (key, step) pair twice)."""

    def __init__(self) -> None:
        self.runs: dict[str, MemoryRun] = {}

    def start_run(self, run_id: str | None = None) -> str:
        run_id = run_id or uuid.uuid4().hex
        self.runs[run_id] = MemoryRun()
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        run, step = self.runs[run_id], step or 0
        for key, value in metrics.items():
            if np.isfinite(value) and (key, step) not in run.skip:
                run.metrics.setdefault(key, []).append((step, float(value)))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.runs[run_id].tags.update({k: str(v) for k, v in tags.items()})

    def log_checkpoint(self, run_id: str, data: bytes, server_round: int) -> None:
        run = self.runs[run_id]
        run.checkpoints[server_round], run.committed = data, server_round

    def log_round(
        self,
        run_id: str,
        server_round: int,
        metrics: Mapping[int, Mapping[str, float]],
        weights: Weights,
        checkpoint: bytes,
    ) -> None:
        run = self.runs[run_id]
        run.weights[server_round] = {n: np.array(a, copy=True) for n, a in weights.items()}
        run.checkpoints[server_round] = checkpoint
        for step, values in metrics.items():
            self.log_metrics(run_id, values, step)
        run.committed = server_round

    def load_checkpoint(self, run_id: str) -> bytes | None:
        run = self.runs[run_id]
        return None if run.committed is None else run.checkpoints[run.committed]

    def run_status(self, run_id: str) -> str | None:
        run = self.runs.get(run_id)
        return None if run is None else run.status

    def reopen_run(self, run_id: str) -> str:
        run = self.runs[run_id]
        run.status = "RUNNING"
        run.skip = {(key, step) for key, points in run.metrics.items() for step, _ in points}
        return run_id

    def delete_child_runs(self, run_id: str, kinds: Sequence[str]) -> int:
        return 0  # the in-process engine starts no child runs

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.runs[run_id].status = status

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return list(self.runs[run_id].metrics.get(key, []))


@dataclass(frozen=True, slots=True)
class FederationResult:
    weights: dict[str, np.ndarray]
    """Final global weights."""
    val_history: list[dict[str, dict[str, float]]]
    """Per round: ``{partner: validation metrics}`` of that round's global model."""
    scaling: dict[str, list[float]]
    loop: RoundLoop
    """The engine after the run (history rows, strategy state)."""
    selected_round: int
    """The round whose model the run keeps (``select``: best validated; else the last)."""
    selected_weights: dict[str, np.ndarray]
    log: MemoryRunLog
    run_id: str


def fingerprint(partners: Sequence[p.PartnerData], scaling: Mapping[str, Any]) -> dict[str, Any]:
    """What a resume checks: the partners' library digests and the target scaling (as the flow records it)."""
    return {"digests": {d.name: d.summary.digest for d in partners}, "scaling": scaling}


def run_federation(
    partners: Sequence[p.PartnerData],
    *,
    spec: ModelSpec,
    init_weights: Weights,
    strategy: Strategy,
    settings: p.TrainSettings,
    rounds: int,
    seed: int,
    run_id: str = "in-process",
    min_partners: int | None = None,
    seal: Seal | None = None,
    fail: Callable[[str, int], None] | None = None,
    hooks: Sequence[RoundHook] = (),
    log: MemoryRunLog | None = None,
    device: str = "cpu",
    select: bool = False,
    patience: int | None = None,
) -> FederationResult:
    """``rounds`` rounds of the engine over ``partners`` in this process, then each partner's validation metrics of
    the final model (the flow gets these from the partners' final jobs).

    ``run_id`` is also the partners' ``state_key`` (SCAFFOLD's ``c_i`` lives under it in each workspace);
    ``min_partners`` is the quorum (default: every partner). With ``log`` holding a stopped run ``run_id``, the
    federation resumes after its last committed round. ``select`` and ``patience`` are the config's
    ``federation.selection: best_val`` and ``federation.patience`` (model selection and early stopping).

    Raises
    ------
    QuorumError
        If a round keeps fewer than ``min_partners`` updates.
    """
    scaling = p.combine_moments([p.partner_label_moments(d) for d in partners], len(spec.task_names))
    names = [d.name for d in partners]
    quorum = len(partners) if min_partners is None else min_partners
    log = log or MemoryRunLog()
    saved = reopen(log, run_id) if run_id in log.runs else None
    if saved is None:
        log.start_run(run_id)
    loop = RoundLoop(
        log=log,
        run_id=run_id,
        strategy=strategy,
        names=names,
        quorum=quorum,
        sizes={s: {d.name: getattr(d.summary, f"n_{s}") for d in partners} for s in ("val", "test")},
        metric=coord.primary_metric(spec.task_types),
        fingerprint=fingerprint(partners, scaling),
        hooks=hooks,
        min_partners=min_partners,
        select=select,
        patience=patience,
    )
    pool = InProcessPool(partners, settings=settings, seed=seed, device=device, seal=seal, fail=fail)
    loop.start(init_weights, saved)
    loop.run(pool, spec, scaling, rounds)
    loop.record_val(loop.done, pool.evaluate(spec, loop.weights, scaling))
    log.end_run(run_id)
    chosen, weights = loop.selected()
    return FederationResult(
        weights=dict(loop.weights),
        val_history=list(loop.history.val),
        scaling=scaling,
        loop=loop,
        selected_round=chosen,
        selected_weights=dict(weights),
        log=log,
        run_id=run_id,
    )


def prepare_demo_libraries(paths: Mapping[str, Path], workspace: Path, *, seed: int = 0) -> list[p.PartnerData]:
    """Prepare libraries written like the demo's (``smiles``, regression ``expt``) with default options, each in
    ``workspace/<name>``: the partners of benches and learning tests."""
    return [
        p.prepare_partner(
            name,
            path=path,
            workspace=workspace / name,
            smiles_column="smiles",
            label_columns=["expt"],
            task_types=["regression"],
            standardize=StandardizeOptions(),
            duplicates="merge",
            split_fractions=(0.8, 0.1, 0.1),
            seed=seed,
        )
        for name, path in paths.items()
    ]
