"""The strategy interface and the one shared guard every round's updates pass through.

A strategy holds hyperparameters (``options``, validated once in the constructor) and server state (``state_dict``,
numpy arrays and scalars only, so a resume can checkpoint it). Per round the coordinator:

1. sends each partner the global weights plus :meth:`Strategy.fit_options` (scalars, e.g. FedProx's mu) and
   :meth:`Strategy.fit_tensors` (weight-shaped tensors, e.g. SCAFFOLD's control variate);
2. hands the partners' :class:`~molfed.federated.types.Update` values and :class:`~molfed.federated.types.Failure`
   values to :meth:`Strategy.run_round`, which validates them (:func:`validate_updates`), enforces the quorum and
   calls the strategy's pure aggregation function from :mod:`molfed.federated.aggregate`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from molfed.federated.types import Failure, QuorumError, Update, Weights, check_compatible
from molfed.models.naming import SHARED_HEAD_PREFIX


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    weights: dict[str, np.ndarray]
    """New global weights."""
    accepted: tuple[str, ...]
    """Partners whose updates were aggregated."""
    failures: tuple[Failure, ...]
    """Partners that failed or whose updates were rejected, with reasons."""
    val_metrics: Mapping[str, float] | None = None
    """The previous round's global model's validation metrics over the union of the accepted partners' validation
    splits, when they travelled as sums inside the updates (secure aggregation, :mod:`molfed.federated.val_sums`)."""


def validate_updates(
    current: Weights,
    updates: Sequence[Update],
    failures: Sequence[Failure],
    *,
    min_partners: int,
    metrics: Sequence[str] = (),
    extras: Sequence[str] = (),
) -> tuple[list[Update], list[Failure]]:
    """Reject unusable updates and enforce the quorum.

    An update is rejected (becomes a :class:`Failure` with the reason) if its weights differ from
    :func:`expected_tensors` (``current``, or ``current`` without the shared head) in names, shapes or dtype kind
    or hold NaN/inf, if ``n_samples <= 0``, if a metric named in ``metrics`` is
    missing, non-finite or negative, or if a tensor set named in ``extras`` is missing or fails the same checks as
    the weights.

    Raises
    ------
    QuorumError
        If fewer than ``min_partners`` updates remain; the message names the failed partners and reasons.
    """
    accepted: list[Update] = []
    rejected = list(failures)
    for update in updates:
        problem = _problem(current, update, metrics, extras)
        if problem is None:
            accepted.append(update)
        else:
            rejected.append(Failure(update.partner, f"update rejected: {problem}"))
    if len(accepted) < min_partners:
        reasons = "; ".join(f"{f.partner}: {f.reason}" for f in rejected) or "no partner reported"
        raise QuorumError(f"{len(accepted)} usable update(s), quorum is {min_partners} ({reasons})")
    return accepted, rejected


def expected_tensors(current: Weights, update: Update) -> Weights:
    """The tensors of ``current`` that ``update`` must carry: all of them, or all but the shared head (every
    ``head.*`` tensor, as a whole) when the partner has no shared task. Nothing else may be carried: a private head
    in an update is rejected as unexpected."""
    if any(n.startswith(SHARED_HEAD_PREFIX) for n in update.weights):
        return current
    return {n: a for n, a in current.items() if not n.startswith(SHARED_HEAD_PREFIX)}


def complete_updates(current: Weights, updates: Sequence[Update]) -> list[Update]:
    """Give every (validated) update every tensor of ``current``.

    A tensor an update lacks (the shared head of a partner without shared tasks) is filled in with the
    sample-weighted mean of that tensor over the updates that carry it, or ``current``'s value if none does; a
    lacking extras tensor likewise, or zeros. With FedAvg each tensor thus becomes the sample-weighted mean over the
    partners that train it, and a server step (FedAvgM, FedAdam, SCAFFOLD) moves it by that mean's change; the
    robust and fairness strategies see the filled values as if those partners had agreed with the carriers' mean.
    """
    if all(len(u.weights) == len(current) for u in updates):
        return list(updates)

    def means(pairs: Sequence[tuple[Weights, int]], default: Weights) -> dict[str, np.ndarray]:
        out = {}
        for name in current:
            carriers = [(t[name], n) for t, n in pairs if name in t]
            if not carriers:
                out[name] = np.asarray(default[name], np.float32)
                continue
            stack = np.stack([np.asarray(a, np.float64) for a, _ in carriers])
            counts = np.asarray([n for _, n in carriers], np.float64)
            out[name] = np.tensordot(counts / counts.sum(), stack, axes=1).astype(np.float32)
        return out

    fill = means([(u.weights, u.n_samples) for u in updates], current)
    zeros = {n: np.zeros(np.shape(a), np.float32) for n, a in current.items()}
    keys = sorted({k for u in updates for k in u.extras})
    extra_fill = {k: means([(u.extras[k], u.n_samples) for u in updates if k in u.extras], zeros) for k in keys}
    return [
        replace(
            u,
            weights={n: u.weights[n] if n in u.weights else fill[n] for n in current},
            extras={k: {n: t[n] if n in t else extra_fill[k][n] for n in current} for k, t in u.extras.items()},
        )
        for u in updates
    ]


def _problem(current: Weights, update: Update, metrics: Sequence[str], extras: Sequence[str]) -> str | None:
    current = expected_tensors(current, update)
    problem = check_compatible(current, update.weights)
    if problem is not None:
        return problem
    if update.n_samples <= 0:
        return f"got n_samples={update.n_samples}, expected > 0"
    for key in metrics:
        value = update.metrics.get(key)
        if value is None:
            return f"metric {key!r} missing, the strategy needs it"
        if not math.isfinite(value) or value < 0:
            return f"metric {key!r}: got {value}, expected a finite value >= 0"
    for key in extras:
        if key not in update.extras:
            return f"tensors {key!r} missing, the strategy needs them"
        problem = check_compatible(current, update.extras[key])
        if problem is not None:
            return f"tensors {key!r}: {problem}"
    return None


@dataclass(frozen=True, slots=True)
class StrategyCaps:
    """What a strategy can do, declared on its class (``caps = StrategyCaps(...)``); config validation, the
    secure-aggregation check, the privacy wrappers and the docs read these flags
    (:mod:`molfed.federated.capabilities`)."""

    individual_updates: bool
    """Looks at each partner's update (medians, trimming, distances, per-partner loss weights): it cannot run on a
    secure sum, and client-level DP cannot feed it one noisy pseudo-update."""
    server_tensors: bool = False
    """Sends weight-shaped tensors to partners each round (``fit_tensors``, e.g. control variates) and needs extra
    tensors back: sites mode does not carry them yet, and secure aggregation does not sum them."""
    private_statistics: bool = False
    """Partners send statistics of their data besides the update (a loss, control deltas) computed without DP
    noise: sample-level DP would not cover them."""
    robust: bool = False
    """Tolerates a minority of arbitrary (Byzantine) updates."""

    @property
    def secure_sum(self) -> bool:
        """Runs under secure aggregation (needs only the weighted sum of updates)."""
        return not (self.individual_updates or self.server_tensors)

    @property
    def client_dp(self) -> bool:
        """Runs under client-level DP (one clipped, noised mean update a round)."""
        return not (self.individual_updates or self.server_tensors)

    @property
    def sample_dp(self) -> bool:
        """Runs under sample-level DP (everything a partner sends passes through DP-SGD)."""
        return not self.private_statistics

    @property
    def sites(self) -> bool:
        """Runs in sites mode."""
        return not self.server_tensors


def sample_weighted(updates: Sequence[Update]) -> list[tuple[Weights, int]]:
    """``(weights, n_samples)`` of each update: the input of the sample-weighted aggregations."""
    return [(u.weights, u.n_samples) for u in updates]


class Strategy:
    """Base class. Subclasses set ``name``, ``caps`` and ``defaults`` and implement :meth:`aggregate`.

    Parameters
    ----------
    **options
        Hyperparameters, each one of ``defaults``' keys; numbers (configs deliver floats).

    Raises
    ------
    ValueError
        If an option is unknown (the message lists the valid ones), not a number, or out of range.
    """

    name: ClassVar[str]
    caps: ClassVar[StrategyCaps]
    """What the strategy can do (secure sum, DP modes, sites mode, robustness): see :class:`StrategyCaps`."""
    defaults: ClassVar[Mapping[str, float]] = {}
    """Option name -> default value."""
    required_metrics: ClassVar[tuple[str, ...]] = ()
    """``Update.metrics`` keys every update must carry (checked by :func:`validate_updates`)."""
    required_extras: ClassVar[tuple[str, ...]] = ()
    """``Update.extras`` keys every update must carry (checked by :func:`validate_updates`)."""

    def __init__(self, **options: float) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"strategy {self.name!r}: unknown option(s) {unknown}; valid options: {sorted(self.defaults)}"
            )
        self.options: dict[str, float] = dict(self.defaults)
        for key, value in options.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"strategy {self.name!r}: option {key!r}: got {value!r}, expected a finite number")
            self.options[key] = float(value)
        self.check_options()

    def check_options(self) -> None:
        """Raise ``ValueError`` for out-of-range options (override; call :meth:`_require`)."""

    def _require(self, key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"strategy {self.name!r}: option {key!r}: got {self.options[key]:g}, expected {expected}")

    def _int_option(self, key: str, minimum: int) -> int:
        value = self.options[key]
        self._require(key, value == int(value) and value >= minimum, f"a whole number >= {minimum}")
        return int(value)

    def fit_options(self, server_round: int) -> dict[str, float]:
        """Scalar options sent to every partner's local training this round (see ``molfed.federated.types``)."""
        return {}

    def fit_tensors(self, server_round: int, current: Weights) -> dict[str, dict[str, np.ndarray]]:
        """Weight-shaped tensors sent to every partner this round, by name (e.g. SCAFFOLD's control variate)."""
        return {}

    def aggregate(
        self, server_round: int, current: Weights, updates: Sequence[Update], *, invited: int
    ) -> dict[str, np.ndarray]:
        """New global weights from validated ``updates`` (at least one, sorted by partner name).

        ``invited`` counts the partners asked this round (accepted + failed + rejected).
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Server state needed to resume: numpy arrays, lists and scalars only (empty for stateless strategies)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises
        ------
        ValueError
            If ``state`` has keys this strategy does not know.
        """
        self._check_state_keys(state, ())

    def _check_state_keys(self, state: Mapping[str, Any], known: Sequence[str]) -> None:
        unknown = sorted(set(state) - set(known))
        if unknown:
            raise ValueError(f"strategy {self.name!r}: unknown state key(s) {unknown}; expected {sorted(known)}")

    def run_round(
        self,
        server_round: int,
        current: Weights,
        updates: Sequence[Update],
        failures: Sequence[Failure] = (),
        *,
        min_partners: int = 1,
    ) -> RoundOutcome:
        """Validate, enforce the quorum, aggregate.

        With no usable update and a quorum of 0 the round keeps ``current`` and leaves the server state untouched.
        Updates are aggregated in partner-name order, so the result does not depend on arrival order.

        Raises
        ------
        QuorumError
            See :func:`validate_updates`.
        """
        accepted, rejected = validate_updates(
            current,
            updates,
            failures,
            min_partners=min_partners,
            metrics=self.required_metrics,
            extras=self.required_extras,
        )
        if not accepted:
            weights = {n: np.array(a, dtype=np.float32) for n, a in current.items()}
        else:
            ordered = complete_updates(current, sorted(accepted, key=lambda u: u.partner))
            weights = self.aggregate(server_round, current, ordered, invited=len(accepted) + len(rejected))
        return RoundOutcome(weights, tuple(u.partner for u in accepted), tuple(rejected))


def arrays(state: Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
    """Copy a ``{name: array}`` state entry as float64 arrays (None stays None)."""
    return None if state is None else {n: np.array(a, dtype=np.float64) for n, a in state.items()}
