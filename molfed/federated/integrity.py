"""The coordinator's integrity guard: every round's updates pass it before the aggregation strategy sees them.

:class:`GuardedStrategy` wraps a strategy and, per round,

1. verifies each update's Ed25519 signature (:mod:`molfed.federated.signing`) when public keys are configured:
   unsigned, forged, replayed (other run or round), renamed or altered updates are rejected;
2. screens the remaining updates by their deltas (:mod:`molfed.federated.validation`) when bounds are configured;
3. hands the survivors and the rejections (as :class:`~molfed.federated.types.Failure` s, with reasons) to the
   wrapped strategy, whose shared guard applies the quorum (``min_partners``) and aggregates.

Under secure aggregation the updates carry no weights: the guard runs a secure round
(:func:`molfed.federated.secure.rounds.secure_round`) whose signatures cover the masked vectors, and feeds the
revealed mean to the wrapped strategy as one sample-weighted update (sum-only strategies give the same result).
Every other strategy method (options, tensors, state) is the wrapped strategy's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from molfed.federated import val_sums
from molfed.federated.secure.fixedpoint import DEFAULT_SCALE
from molfed.federated.secure.rounds import Transport, secure_round
from molfed.federated.signing import SignedUpdate, verify_updates
from molfed.federated.strategy_base import RoundOutcome, Strategy
from molfed.federated.types import Failure, QuorumError, Update, Weights
from molfed.federated.validation import validate_update_deltas


@dataclass(frozen=True, slots=True)
class Screens:
    """Delta bounds (see :func:`~molfed.federated.validation.validate_update_deltas`); None disables one."""

    max_delta_norm: float | None = None
    max_norm_ratio: float | None = None
    min_cosine: float | None = None
    min_reference: int = 3


@dataclass(frozen=True, slots=True)
class SecureSettings:
    transport: Transport
    threshold: int
    scale: int = DEFAULT_SCALE
    val_tasks: tuple[tuple[str, str], ...] = ()
    """Shared tasks ``(name, type)`` whose validation sums ride in the masked updates from round 2 on
    (:mod:`molfed.federated.val_sums`); empty: none do."""


@dataclass(frozen=True, slots=True)
class RoundCheck:
    """What the guard saw in one round (aggregates only; reported to the tracker by the flow)."""

    server_round: int
    received: int
    """Updates that arrived."""
    rejected: tuple[Failure, ...]
    """Updates rejected by signature, screening or the strategy's shared guard, with reasons."""
    plaintext: int
    """Updates that carried weights (0 under secure aggregation: only masked vectors were aggregated)."""
    delta_norms: Mapping[str, float] = field(default_factory=dict)
    verified: int = 0
    """Signatures checked and found valid (over the weights, or under secure aggregation the masked vectors)."""

    def metrics(self) -> dict[str, float]:
        out = {"updates_received": float(self.received), "updates_rejected": float(len(self.rejected))}
        out["signatures_verified"] = float(self.verified)
        out.update({f"delta_norm.{p}": n for p, n in self.delta_norms.items()})
        return out


class GuardedStrategy(Strategy):
    """``inner`` behind signature checks, delta screening and, optionally, secure aggregation.

    Parameters
    ----------
    inner
        The aggregation strategy.
    run_id
        The run id partners sign (the flow's MLflow run id).
    public_keys
        Partner name -> Ed25519 public key; None: signatures are not checked.
    screens
        Delta bounds; None: no screening beyond the strategy's shared guard.
    secure
        Secure-aggregation settings; None: plain updates.
    on_round
        Called with each round's :class:`RoundCheck` (also when the round then fails its quorum).
    """

    name = "guarded"

    def __init__(
        self,
        inner: Strategy,
        *,
        run_id: str,
        public_keys: Mapping[str, str] | None = None,
        screens: Screens | None = None,
        secure: SecureSettings | None = None,
        on_round: Callable[[RoundCheck], None] | None = None,
    ):
        if secure is not None and screens is not None:
            raise ValueError("delta screens need individual updates, which secure aggregation hides")
        self.inner, self.run_id, self.public_keys = inner, run_id, public_keys
        self.screens, self.secure, self.on_round = screens, secure, on_round
        self.options = inner.options

    def fit_options(self, server_round: int) -> dict[str, float]:
        return self.inner.fit_options(server_round)

    def fit_tensors(self, server_round: int, current: Weights) -> dict[str, dict[str, np.ndarray]]:
        return self.inner.fit_tensors(server_round, current)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def run_round(
        self,
        server_round: int,
        current: Weights,
        updates: Sequence[Update],
        failures: Sequence[Failure] = (),
        *,
        min_partners: int = 1,
    ) -> RoundOutcome:
        """Verify, screen, then the wrapped strategy's :meth:`~Strategy.run_round` (or a secure round).

        Raises
        ------
        QuorumError
            If fewer than ``min_partners`` updates survive.
        """
        if self.secure is not None:
            return self._secure_round(server_round, current, updates, failures, min_partners)
        received, plaintext = len(updates), sum(1 for u in updates if u.weights)
        rejected: list[Failure] = []
        n_verified = 0
        if self.public_keys is not None:
            signatures = {u.partner: u.signature for u in updates if isinstance(u, SignedUpdate) and u.signature}
            verified, bad = verify_updates(
                updates, signatures, self.public_keys, run_id=self.run_id, server_round=server_round
            )
            updates, rejected, n_verified = verified, rejected + bad, len(verified)
        norms: Mapping[str, float] = {}
        if self.screens is not None:
            s = self.screens
            screened = validate_update_deltas(
                current,
                updates,
                max_delta_norm=s.max_delta_norm,
                max_norm_ratio=s.max_norm_ratio,
                min_cosine=s.min_cosine,
                min_reference=s.min_reference,
            )
            updates, rejected, norms = list(screened.accepted), rejected + list(screened.rejected), screened.delta_norms
        try:
            outcome = self.inner.run_round(
                server_round, current, updates, [*failures, *rejected], min_partners=min_partners
            )
        except QuorumError:
            self._report(RoundCheck(server_round, received, tuple(rejected), plaintext, norms, n_verified))
            raise
        rejected_all = tuple(f for f in outcome.failures if f not in failures)
        self._report(RoundCheck(server_round, received, rejected_all, plaintext, norms, n_verified))
        return outcome

    def _secure_round(
        self,
        server_round: int,
        current: Weights,
        updates: Sequence[Update],
        failures: Sequence[Failure],
        min_partners: int,
    ) -> RoundOutcome:
        assert self.secure is not None
        plain = [u for u in updates if u.weights or u.extras]
        rejected = [
            Failure(u.partner, "update rejected: plain weights refused under secure aggregation") for u in plain
        ]
        names = [u.partner for u in updates if not (u.weights or u.extras)]
        check = RoundCheck(server_round, len(updates), tuple(rejected), len(plain))
        tasks = self.secure.val_tasks if server_round > 1 else ()
        try:
            result = secure_round(
                self.secure.transport,
                names,
                template={**current, **val_sums.template(len(tasks))} if tasks else current,
                run_id=self.run_id,
                server_round=server_round,
                threshold=self.secure.threshold,
                scale=self.secure.scale,
                public_keys=self.public_keys,
            )
        except QuorumError:
            self._report(check)
            raise
        finally:
            self.secure.transport.end_round(self.run_id, server_round)
        rejected += result.failures
        verified = len(result.survivors) if self.public_keys is not None else 0
        self._report(RoundCheck(server_round, len(updates), tuple(rejected), len(plain), verified=verified))
        if len(result.survivors) < min_partners:
            reasons = "; ".join(f"{f.partner}: {f.reason}" for f in [*failures, *rejected]) or "none"
            raise QuorumError(f"{len(result.survivors)} usable update(s), quorum is {min_partners} ({reasons})")
        model, totals = val_sums.take(result.weights, result.n_samples)
        val = val_sums.metrics(totals, *zip(*tasks, strict=True)) if totals is not None and tasks else None
        mean = Update("secure-sum", model, result.n_samples)
        weights = self.inner.aggregate(server_round, current, [mean], invited=len(updates) + len(failures))
        return RoundOutcome(weights, result.survivors, (*failures, *rejected), val)

    def _report(self, check: RoundCheck) -> None:
        if self.on_round is not None:
            self.on_round(check)
