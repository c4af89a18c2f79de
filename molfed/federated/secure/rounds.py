"""One secure-aggregation round driven by the coordinator over a :class:`Transport` to the partners.

The coordinator routes the protocol's messages (round keys, encrypted shares, masked vectors, share reveals) and
never holds a partner's plain update. A partner that fails at any step is a dropout: the round goes on while at
least ``threshold`` partners remain, its pairwise masks are removed with its Shamir-shared mask key (dropped before
masking) or its masked vector is kept and its self mask recovered from the survivors' shares (dropped after masking).
A masked vector that fails the metadata checks or, with public keys configured, its partner's signature, is treated
like a dropout too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

import numpy as np

from molfed.federated.secure.coordinator import check_masked, unmask_sum
from molfed.federated.secure.fixedpoint import DEFAULT_SCALE
from molfed.federated.secure.masks import advert_payload
from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.signing import MASKED_CONTEXT, UpdateSignature, load_public_key, verify_message, verify_update
from molfed.federated.types import Failure, QuorumError, Update, Weights

log = logging.getLogger(__name__)
T = TypeVar("T")


Reply: TypeAlias = T | Exception  # noqa: UP040 - generic alias, Python 3.11
"""A partner's answer to one step, or the error that made it a dropout (a partner missing from a step's reply
mapping dropped out too)."""


class Transport(Protocol):
    """How the coordinator reaches the partners' side of the protocol: one call per step for all partners at once
    (in sites mode each step is one job per partner, run concurrently)."""

    def advertise(
        self, partners: Sequence[str], *, run_id: str, server_round: int, threshold: int
    ) -> Mapping[str, Reply[AdvertisedKeys]]: ...

    def share_keys(
        self, roster: Mapping[str, AdvertisedKeys], *, run_id: str, server_round: int
    ) -> Mapping[str, Reply[list[EncryptedShare]]]:
        """Every partner in ``roster`` gets the whole roster and returns one encrypted share per peer."""

    def mask(
        self, inboxes: Mapping[str, Sequence[EncryptedShare]], *, run_id: str, server_round: int
    ) -> Mapping[str, Reply[tuple[MaskedUpdate, UpdateSignature | None]]]:
        """Each partner in ``inboxes`` gets the shares addressed to it and returns its masked vector."""

    def reveal(
        self, survivors: Sequence[str], *, run_id: str, server_round: int
    ) -> Mapping[str, Reply[ShareReveal]]: ...

    def end_round(self, run_id: str, server_round: int) -> None:
        """Tell every partner the round is over (a dropped or rejected one forgets its held update and secrets)."""


@dataclass(frozen=True, slots=True)
class SecureSum:
    weights: dict[str, np.ndarray]
    """``sum_k n_k w_k / sum_k n_k`` over the survivors, float32 (FedAvg within fixed-point precision)."""
    n_samples: int
    """``sum_k n_k`` over the survivors."""
    survivors: tuple[str, ...]
    """Partners whose masked vectors entered the sum."""
    failures: tuple[Failure, ...]
    """Dropouts and rejected masked vectors, with reasons."""


def masked_digest(masked: MaskedUpdate) -> str:
    """SHA-256 over a masked vector's layout and bytes (what a partner signs under secure aggregation)."""
    digest = hashlib.sha256(repr(masked.layout).encode())
    digest.update(np.ascontiguousarray(masked.vector, dtype="<u8").tobytes())
    return digest.hexdigest()


def secure_round(
    transport: Transport,
    partners: Sequence[str],
    *,
    template: Weights,
    run_id: str,
    server_round: int,
    threshold: int,
    scale: int = DEFAULT_SCALE,
    public_keys: Mapping[str, str] | None = None,
) -> SecureSum:
    """Run the four protocol steps with ``partners`` and return the unmasked mean.

    Raises
    ------
    QuorumError
        If fewer than ``threshold`` partners remain at any step, or the sum cannot be unmasked.
    """
    sums, total, survivors, failures = _protocol(
        transport,
        partners,
        template=template,
        run_id=run_id,
        server_round=server_round,
        threshold=threshold,
        scale=scale,
        public_keys=public_keys,
    )
    mean = {name: (value / total).astype(np.float32) for name, value in sums.items()}
    return SecureSum(mean, total, survivors, failures)


def secure_vector_sum(
    transport: Transport,
    partners: Sequence[str],
    *,
    layout: Mapping[str, tuple[int, ...]],
    run_id: str,
    threshold: int,
    scale: int = DEFAULT_SCALE,
    public_keys: Mapping[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], tuple[str, ...], tuple[Failure, ...]]:
    """The sum of small named vectors the partners hold (each as an update of ``n_samples = 1``), revealing only
    the sum: ``(sums as float64 by name, survivors, failures)``.

    The same protocol as a training round, under its own ``run_id`` (e.g. ``"<run>/calibration/scores"``; round 0),
    so its keys and masks are fresh and cannot be replayed into a round. Values are rounded to ``1 / scale``:
    integer counts come back exact. For histograms, loss sums and the like (calibration; validation sums).

    Raises
    ------
    QuorumError
        As :func:`secure_round`.
    """
    template = {name: np.zeros(shape, dtype=np.float32) for name, shape in layout.items()}
    sums, _, survivors, failures = _protocol(
        transport,
        partners,
        template=template,
        run_id=run_id,
        server_round=0,
        threshold=threshold,
        scale=scale,
        public_keys=public_keys,
    )
    return sums, survivors, failures


def _protocol(
    transport: Transport,
    partners: Sequence[str],
    *,
    template: Weights,
    run_id: str,
    server_round: int,
    threshold: int,
    scale: int,
    public_keys: Mapping[str, str] | None,
) -> tuple[dict[str, np.ndarray], int, tuple[str, ...], tuple[Failure, ...]]:
    """The four steps: ``(sum_k n_k w_k by name, sum_k n_k, survivors, failures)``."""
    failures: list[Failure] = []

    def answered(step: str, asked: Sequence[str], replies: Mapping[str, Reply[T]]) -> dict[str, T]:
        """The partners that answered ``step``; the others are dropouts (failures are data)."""
        out: dict[str, T] = {}
        for n in asked:
            reply = replies.get(n, SecAggError("no reply"))
            if isinstance(reply, Exception):  # no message: it may leak
                kind = type(reply).__name__
                log.warning("secure aggregation: partner %s dropped out at %s (%s)", n, step, kind)
                failures.append(Failure(n, f"secure aggregation: dropped out at {step} ({kind})"))
            else:
                out[n] = reply
        return out

    at: dict[str, Any] = {"run_id": run_id, "server_round": server_round}
    roster = {}
    for n, keys in answered("advertise", partners, transport.advertise(partners, threshold=threshold, **at)).items():
        problem = _advert_problem(keys, n, public_keys, run_id, server_round)
        if problem:
            failures.append(Failure(n, f"round keys rejected: {problem}"))
        else:
            roster[n] = keys
    _enough(len(roster), threshold, "advertised keys", failures)
    sent = answered("share_keys", list(roster), transport.share_keys(roster, **at))
    _enough(len(sent), threshold, "shared keys", failures)
    inboxes = {
        n: [s for sender, shares in sent.items() if sender != n for s in shares if s.recipient == n] for n in sent
    }
    masked = []
    for n, (update, signature) in answered("mask", list(sent), transport.mask(inboxes, **at)).items():
        problem = _problem(update, signature, n, template, public_keys, run_id, server_round)
        if problem:
            failures.append(Failure(n, f"masked update rejected: {problem}"))
        else:
            masked.append(update)
    survivors = [m.partner for m in masked]
    _enough(len(survivors), threshold, "masked updates", failures)
    reveals = list(answered("reveal", survivors, transport.reveal(survivors, **at)).values())
    try:
        sums, total = unmask_sum(
            masked,
            reveals,
            roster,
            template=template,
            run_id=run_id,
            server_round=server_round,
            threshold=threshold,
            scale=scale,
        )
    except SecAggError as exc:
        raise QuorumError(f"secure aggregation failed: {exc}") from None
    return sums, total, tuple(survivors), tuple(failures)


def _advert_problem(
    keys: AdvertisedKeys, sender: str, public_keys: Mapping[str, str] | None, run_id: str, server_round: int
) -> str | None:
    """Screen round keys before broadcasting them: one unauthenticated entry would make every honest partner refuse
    the roster (and so stop the round)."""
    if keys.partner != sender:
        return f"sent by {sender!r} under the name {keys.partner!r}"
    if public_keys is None:
        return None
    if sender not in public_keys:
        return f"no public key configured for {sender!r}"
    payload = advert_payload(sender, keys.channel_key, keys.mask_key, run_id=run_id, server_round=server_round)
    if keys.signature is None or not verify_message(load_public_key(public_keys[sender]), payload, keys.signature):
        return f"not signed by the key configured for {sender!r} (forged or wrong key)"
    return None


def _problem(
    masked: MaskedUpdate,
    signature: UpdateSignature | None,
    sender: str,
    template: Weights,
    public_keys: Mapping[str, str] | None,
    run_id: str,
    server_round: int,
) -> str | None:
    if masked.partner != sender:
        return f"sent by {sender!r} under the name {masked.partner!r}"
    problem = check_masked(masked, template=template, run_id=run_id, server_round=server_round)
    if problem or public_keys is None:
        return problem
    # the signature binds the masked vector's digest; Update is only the carrier of partner name and sample count 0
    carrier = Update(sender, {}, 0)
    return verify_update(
        carrier,
        signature,
        public_keys,
        run_id=run_id,
        server_round=server_round,
        digest=masked_digest(masked),
        context=MASKED_CONTEXT,
    )


def _enough(count: int, threshold: int, what: str, failures: Sequence[Failure]) -> None:
    if count < threshold:
        reasons = "; ".join(f"{f.partner}: {f.reason}" for f in failures) or "none"
        raise QuorumError(f"secure aggregation: {count} partner(s) {what}, threshold is {threshold} ({reasons})")
