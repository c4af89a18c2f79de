"""One secure-aggregation round driven by the coordinator over a :class:`Transport` to the partners.

The coordinator routes the protocol's messages (round keys, encrypted shares, masked vectors, share reveals) and
never holds a partner's plain update. A partner that fails at any step is a dropout: the round goes on while at
least ``threshold`` partners remain, its pairwise masks are removed with its Shamir-shared mask key (dropped before
masking) or its masked vector is kept and its self mask recovered from the survivors' shares (dropped after masking).
A masked vector that fails the metadata checks or, with public keys configured, its partner's signature, is treated
like a dropout too.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from molfed.federated.secure.coordinator import check_masked, unmask_sum
from molfed.federated.secure.fixedpoint import DEFAULT_SCALE
from molfed.federated.secure.masks import advert_payload
from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.signing import MASKED_CONTEXT, UpdateSignature, load_public_key, verify_message, verify_update
from molfed.federated.types import Failure, QuorumError, Update, Weights

log = logging.getLogger(__name__)
T = TypeVar("T")


class Transport(Protocol):
    """How the coordinator reaches each partner's side of the protocol (one call per partner and step)."""

    def advertise(self, partner: str, *, run_id: str, server_round: int, threshold: int) -> AdvertisedKeys: ...

    def share_keys(
        self, partner: str, roster: Mapping[str, AdvertisedKeys], *, run_id: str, server_round: int
    ) -> list[EncryptedShare]: ...

    def mask(
        self, partner: str, inbox: Sequence[EncryptedShare], *, run_id: str, server_round: int
    ) -> tuple[MaskedUpdate, UpdateSignature | None]: ...

    def reveal(self, partner: str, survivors: Sequence[str], *, run_id: str, server_round: int) -> ShareReveal: ...

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
    failures: list[Failure] = []

    def attempt(name: str, step: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as exc:  # a partner's failure is a dropout (failures are data); no message: it may leak
            log.warning("secure aggregation: partner %s dropped out at %s (%s)", name, step, type(exc).__name__)
            failures.append(Failure(name, f"secure aggregation: dropped out at {step} ({type(exc).__name__})"))
            return None

    stamp = partial_stamp(run_id, server_round)
    roster = {}
    for n in partners:
        keys = attempt(n, "advertise", stamp(transport.advertise, n, threshold=threshold))
        problem = None if keys is None else _advert_problem(keys, n, public_keys, run_id, server_round)
        if problem:
            failures.append(Failure(n, f"round keys rejected: {problem}"))
        elif keys is not None:
            roster[n] = keys
    _enough(len(roster), threshold, "advertised keys", failures)
    sent: dict[str, list[EncryptedShare]] = {}
    for n in roster:
        shares = attempt(n, "share_keys", stamp(transport.share_keys, n, roster))
        if shares is not None:
            sent[n] = shares
    _enough(len(sent), threshold, "shared keys", failures)
    masked = []
    for n in sent:
        inbox = [s for sender, shares in sent.items() if sender != n for s in shares if s.recipient == n]
        got = attempt(n, "mask", stamp(transport.mask, n, inbox))
        if got is None:
            continue
        problem = _problem(got[0], got[1], n, template, public_keys, run_id, server_round)
        if problem:
            failures.append(Failure(n, f"masked update rejected: {problem}"))
        else:
            masked.append(got[0])
    survivors = [m.partner for m in masked]
    _enough(len(survivors), threshold, "masked updates", failures)
    reveals = []
    for n in survivors:
        reveal = attempt(n, "reveal", stamp(transport.reveal, n, survivors))
        if reveal is not None:
            reveals.append(reveal)
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
    mean = {name: (value / total).astype(np.float32) for name, value in sums.items()}
    return SecureSum(mean, total, tuple(survivors), tuple(failures))


def partial_stamp(run_id: str, server_round: int) -> Callable[..., Callable[[], Any]]:
    """``stamp(step, *args, **kwargs)``: a call of a transport step bound to this run and round."""

    def stamp(step: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
        return functools.partial(step, *args, run_id=run_id, server_round=server_round, **kwargs)

    return stamp


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
