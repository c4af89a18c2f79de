"""The federation engine: molfed's one round loop, with a checkpoint after every round, and the reopening of a
stopped run. Prefect-free and MLflow-free.

The loop talks to two small interfaces:

- a :class:`PartnerPool` that runs a round's jobs at the partners and returns their replies and failures — in this
  process (:class:`~molfed.federated.inprocess.InProcessPool`), in job threads (``tasks.partner.LocalPartners``)
  or at site agents (``tasks.sites.SitePartners``);
- a :class:`RunLog` that stores metrics, tags and checkpoints — MLflow (:class:`molfed.tracking.Tracker`) or
  memory (:class:`~molfed.federated.inprocess.MemoryRunLog`).

Per round: the round's hooks may stop it; the sampled partners train (the pool retries and times out; failures
come back as data); the strategy aggregates under the quorum; then the round's global weights and checkpoint are
stored and committed together with the round's metrics (:meth:`RunLog.log_round`). A resumed run restarts after
the last committed round; the run log skips (key, step) pairs it already holds, so a round re-run after a kill logs
nothing twice and nothing goes missing. Retries, timeouts and the quorum are this loop's policy; whatever retries a
transport does underneath is its own detail.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from molfed import progress
from molfed.errors import MolfedError
from molfed.federated import checkpoint as ck
from molfed.federated import coordinator as coord
from molfed.federated.jobs import RoundReply
from molfed.federated.sampling import round_quorum
from molfed.federated.strategies import Strategy
from molfed.federated.types import Failure, QuorumError, Weights
from molfed.models.model import ModelSpec
from molfed.train.metrics import higher_is_better

BASELINE_KINDS = (coord.LOCAL_ONLY, coord.POOLED, coord.FINE_TUNED)
"""Child runs of a federation redone (deleted first) when it resumes."""


class PartnerPool(Protocol):
    """Runs a round's jobs at the partners; a partner that fails is a :class:`Failure`, not an exception."""

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
    ) -> tuple[dict[str, RoundReply], list[Failure]]:
        """Train round ``server_round`` at ``partners`` (default: all); replies (updates as they left the partner:
        signed or masked) and failures, by partner."""
        ...


class RunLog(Protocol):
    """Where a federation's metrics, tags and committed checkpoints go."""

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...

    def log_checkpoint(self, run_id: str, data: bytes, server_round: int) -> None:
        """Store checkpoint ``data`` of ``server_round`` and commit it."""

    def log_round(
        self,
        run_id: str,
        server_round: int,
        metrics: Mapping[int, Mapping[str, float]],
        weights: Weights,
        checkpoint: bytes,
    ) -> None:
        """Store the round's global weights and checkpoint, then commit them with the round's metrics (by step);
        (key, step) pairs already held (a resumed run) are skipped."""

    def load_checkpoint(self, run_id: str) -> bytes | None:
        """The last committed checkpoint, or None."""

    def run_status(self, run_id: str) -> str | None:
        """``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``; None if there is no such run."""

    def reopen_run(self, run_id: str) -> str:
        """Mark a stopped run as running again (metrics it holds are not logged twice); return its name."""

    def delete_child_runs(self, run_id: str, kinds: Sequence[str]) -> int: ...


class RoundHook(Protocol):
    """Round-level policy beside the strategy (e.g. the privacy budget); its state goes in the checkpoint's
    sections."""

    def before_round(self, server_round: int) -> None:
        """Raise (a :class:`~molfed.errors.MolfedError`) to stop before anything of the round runs."""

    def after_round(self, server_round: int, participants: Sequence[str]) -> dict[str, float]:
        """Metrics of the round, logged with the training metrics at step ``server_round``."""
        ...


def reopen(log: RunLog, run_id: str) -> bytes:
    """Reopen a stopped run for ``molfed resume``: its last committed checkpoint (baseline child runs of an
    interrupted final stage are deleted; they are redone).

    Raises
    ------
    MolfedError
        If the run does not exist, already finished, or has no checkpoint.
    """
    status = log.run_status(run_id)
    if status is None:
        raise MolfedError(f"no run {run_id!r} in the tracking store; check the run id in the MLflow UI")
    if status == "FINISHED":
        raise MolfedError(f"run {run_id} already finished; nothing to resume")
    saved = log.load_checkpoint(run_id)
    if saved is None:
        raise MolfedError(f"run {run_id} has no checkpoint; start it again with molfed run")
    log.reopen_run(run_id)
    log.delete_child_runs(run_id, BASELINE_KINDS)
    return saved


class Best:
    """The best validated round so far (model selection across rounds) and the early-stopping rule."""

    def __init__(self, higher: bool, select: bool, patience: int | None):
        self.higher, self.select, self.patience = higher, select, patience
        self.round, self.value = 0, float("nan")
        self.weights: Weights = {}

    def observe(self, server_round: int, value: float | None, weights: Weights) -> None:
        """Validation ``value`` of round ``server_round``'s global ``weights`` (None or NaN: not comparable)."""
        if not self.select or value is None or not math.isfinite(value):
            return
        if self.round == 0 or (value > self.value if self.higher else value < self.value):
            self.round, self.value = server_round, float(value)
            self.weights = {n: np.array(a, dtype=np.float32, copy=True) for n, a in weights.items()}

    def exhausted(self, validated: int) -> bool:
        """Whether ``patience`` rounds passed since the best, with round ``validated`` the last one validated."""
        return bool(self.select and self.patience and self.round > 0 and validated - self.round >= self.patience)

    def describe(self, metric: str, chosen: int, rounds_run: int, planned: int) -> str:
        """Why round ``chosen`` was kept, for the run's tag ``molfed.selection``."""
        if not self.select or self.round == 0:
            return f"last round ({chosen} of {rounds_run})"
        stop = f"; stopped early (patience {self.patience} of {planned} rounds)" if rounds_run < planned else ""
        return f"best validation {metric} {self.value:.4g} at round {chosen} of {rounds_run}{stop}"

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "value": self.value, "weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.round, self.value = int(state["round"]), float(state["value"])
        self.weights = {n: np.asarray(a, dtype=np.float32) for n, a in state["weights"].items()}


class RoundLoop:
    """Global weights, strategy state and history of one federation, checkpointed after every round."""

    def __init__(
        self,
        *,
        log: RunLog,
        run_id: str,
        strategy: Strategy,
        names: Sequence[str],
        quorum: int,
        sizes: Mapping[str, Mapping[str, int]],
        metric: str,
        fingerprint: dict[str, Any],
        sections: ck.Sections | None = None,
        hooks: Sequence[RoundHook] = (),
        sample: Callable[[int], list[str]] | None = None,
        min_partners: int | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        select: bool = False,
        patience: int | None = None,
        select_on: str | None = None,
    ):
        self.log, self.run_id, self.strategy = log, run_id, strategy
        self.names, self.quorum, self.sizes, self.metric = list(names), quorum, sizes, metric
        self.fingerprint, self.sections, self.hooks = fingerprint, sections or ck.Sections(), list(hooks)
        self.sample = sample or (lambda server_round: list(self.names))
        """The partners asked in a round (see :mod:`molfed.federated.sampling`); default: all."""
        self.min_partners = min_partners
        self.logger = logger or logging.getLogger(__name__)
        self.history = ck.RoundHistory()
        self.weights: Weights = {}
        self.done = -1
        """Last completed round whose checkpoint is committed (0: the initial state; -1: none yet)."""
        self.select_on = select_on or metric
        """The validation metric rounds are compared on: ``metric``, or under secure aggregation one that is a sum
        (:func:`molfed.federated.val_sums.selection_metric`)."""
        self.best = Best(higher_is_better(self.select_on), select, patience)
        """Model selection across rounds (checkpointed): the round with the best validation ``select_on``."""
        self.sections.add("selection", self.best.state_dict, self.best.load_state_dict)

    def start(self, init: Weights, saved: bytes | None) -> None:
        """Begin at round 1 from ``init`` (checkpoint 0 is committed), or continue from a saved checkpoint.

        Raises
        ------
        MolfedError
            If the checkpoint is unreadable or the partners' libraries or target scaling changed since.
        """
        if saved is None:
            self.weights = init
            self.commit(0)
            return
        try:
            state = ck.from_bytes(saved)
        except ValueError as exc:
            raise MolfedError(f"run {self.run_id}: {exc}") from None
        if state.fingerprint != self.fingerprint:
            raise MolfedError(
                f"run {self.run_id}: partners or their libraries changed since the run started "
                f"(was {sorted(state.fingerprint.get('digests', {}))}); a resume needs the same data"
            )
        self.strategy.load_state_dict(state.strategy)
        self.sections.load(state.sections)
        ck.restore_rng(state.rng)
        self.weights, self.history, self.done = state.weights, state.history, state.server_round
        self.logger.info("resuming run %s after round %d", self.run_id, self.done)

    def commit(self, server_round: int, metrics: Mapping[int, Mapping[str, float]] | None = None) -> None:
        """Store the checkpoint after ``server_round`` and commit it; with ``metrics`` (by step), also log the
        round's global weights and metrics, in the same commit (:meth:`RunLog.log_round`)."""
        state = ck.Checkpoint(
            server_round=server_round,
            weights=dict(self.weights),
            strategy=self.strategy.state_dict(),
            rng=ck.capture_rng(),
            history=self.history,
            fingerprint=self.fingerprint,
            sections=self.sections.save(),
        )
        data = ck.to_bytes(state)
        if metrics is None:
            self.log.log_checkpoint(self.run_id, data, server_round)
        else:
            self.log.log_round(self.run_id, server_round, metrics, self.weights, data)
        self.done = server_round

    def record_val(self, step: int, per_partner: dict[str, dict[str, float]]) -> None:
        """Validation metrics of the global model after round ``step``, as partners measured them."""
        self.log.log_metrics(self.run_id, self._val(step, per_partner), step=step)

    def _val(self, step: int, per_partner: dict[str, dict[str, float]]) -> dict[str, float]:
        """Add ``step``'s validation metrics to the history; return them as metrics to log."""
        self.history.val.append({n: per_partner.get(n, {}) for n in self.names})  # {}: no report
        return self._observe(step, coord.split_metrics("val", per_partner, self.sizes["val"]))

    def _val_totals(self, step: int, union: Mapping[str, float]) -> dict[str, float]:
        """``step``'s validation metrics over the union of the partners' validation splits, read off sums that
        travelled inside the masked updates: no per-partner value exists, so none is logged."""
        self.history.val.append({n: {} for n in self.names})
        return self._observe(step, {f"val_{k}": v for k, v in union.items()})

    def _observe(self, step: int, values: dict[str, float]) -> dict[str, float]:
        row = self.history.rows[step - 1]
        row.update({k: values[k] for k in {f"val_{self.metric}", f"val_{self.select_on}"} if k in values})
        self.best.observe(step, values.get(f"val_{self.select_on}"), self.weights)  # self.weights: round step's
        return values

    def selected(self) -> tuple[int, Weights]:
        """The round whose global model the run keeps, and its weights: the best validated round (``select``), else
        the last completed one. Call after the last round's validation metrics are recorded (:meth:`record_val`)."""
        if self.best.select and self.best.round > 0:
            return self.best.round, self.best.weights
        return self.done, self.weights

    def check_quorum(
        self, stage: str, ok: Sequence[str], failures: Sequence[Failure], quorum: int | None = None
    ) -> None:
        """Tag and log each failure of ``stage``; raise :class:`QuorumError` if fewer than ``quorum`` (default: the
        run's) succeeded."""
        quorum = self.quorum if quorum is None else quorum
        for f in failures:
            self.logger.warning("%s: partner %s failed: %s", stage, f.partner, f.reason)
            self.log.set_tags(self.run_id, {f"{stage}.failed.{f.partner}": f.reason[:500]})
        if len(ok) < quorum:
            reasons = "; ".join(f"{f.partner}: {f.reason}" for f in failures)
            raise QuorumError(f"{stage}: {len(ok)} partner(s) succeeded, quorum is {quorum} ({reasons})")

    def run(self, pool: PartnerPool, spec: ModelSpec, scaling: Mapping[str, Sequence[float]], rounds: int) -> None:
        """Rounds ``done + 1 .. rounds``, each committed as a checkpoint."""
        for r in range(self.done + 1, rounds + 1):
            for hook in self.hooks:
                hook.before_round(r)
            s, asked = self.strategy, self.sample(r)
            quorum = round_quorum(len(asked), self.min_partners)
            replies, failures = pool.round(
                r, spec, self.weights, scaling, s.fit_options(r), s.fit_tensors(r, self.weights), self.run_id, asked
            )
            self.check_quorum(f"round.{r}", list(replies), failures, quorum)
            updates = [replies[n].update for n in self.names if n in replies]
            try:
                outcome = s.run_round(r, self.weights, updates, failures, min_partners=quorum)
            except QuorumError as exc:  # too many updates rejected (validation, signatures, screens)
                raise QuorumError(f"round.{r}: {exc}") from None
            rejected = [f for f in outcome.failures if f.partner in replies]
            self.check_quorum(f"round.{r}", outcome.accepted, rejected, quorum)
            train = coord.train_metrics([replies[n].update for n in outcome.accepted], len(asked))
            for hook in self.hooks:
                train.update(hook.after_round(r, list(replies)))
            self.history.rows.append({"round": r, "sampled": ", ".join(asked), **train})
            metrics: dict[int, Mapping[str, float]] = {r: train}
            if r > 1 and outcome.val_metrics is not None:  # as sums in the masked updates (secure aggregation)
                metrics[r - 1] = self._val_totals(r - 1, outcome.val_metrics)
            elif r > 1:  # partners evaluated the previous round's global model before training on it
                metrics[r - 1] = self._val(r - 1, {n: x.incoming_val for n, x in replies.items()})
            self.weights = outcome.weights
            self.commit(r, metrics)
            loss = train.get("train_loss", float("nan"))
            progress.advance("rounds", f"round {r}: train loss {loss:.3f}")
            if r > 1:  # one line per round: the previous round's global model as the partners validated it
                val = metrics[r - 1]
                parts = ", ".join(
                    f"{n} {val[f'val_{self.metric}.{n}']:.4g}" for n in self.names if f"val_{self.metric}.{n}" in val
                )
                self.logger.info(
                    "round %d: train loss %.4f; round %d validation %s %.4g (%s)",
                    r,
                    loss,
                    r - 1,
                    self.select_on,
                    val.get(f"val_{self.select_on}", float("nan")),
                    parts or "over all partners' validation splits",
                )
            else:
                self.logger.info("round %d: train loss %.4f", r, loss)
            if self.best.exhausted(r - 1):  # validation of round r - 1 came in with round r
                self.logger.info(
                    "early stop after round %d: validation %s best at round %d, no better for %d rounds",
                    r,
                    self.select_on,
                    self.best.round,
                    r - 1 - self.best.round,
                )
                break
