"""The partners' side of secure aggregation when every partner runs in this process (local mode, simulation).

After its local training a partner keeps its plain update here (:func:`hold_update`) and sends the coordinator only
its sample count and metrics. :class:`LocalTransport` then plays each partner's protocol steps when the coordinator
asks: a :class:`~molfed.federated.secure.partner.SecAggPartner` per partner and round holds the round's secrets, and
each plain update is dropped as soon as it is masked. The coordinator's code only ever receives the messages
(:mod:`molfed.federated.secure.messages`). Sites mode carries the same steps over partner jobs
(:mod:`molfed.federated.secure.site`, ``tasks/secagg_sites.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from molfed.federated.secure.fixedpoint import DEFAULT_SCALE
from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.secure.partner import SecAggPartner
from molfed.federated.secure.rounds import Reply, masked_digest
from molfed.federated.signing import MASKED_CONTEXT, UpdateSignature, sign_update
from molfed.federated.types import Update, Weights

T = TypeVar("T")
_Key = tuple[str, int, str]  # (run id, round, partner)
_LOCK = threading.Lock()
_HELD: dict[_Key, tuple[Weights, int]] = {}


def hold_update(update: Update, *, run_id: str, server_round: int) -> Update:
    """Partner side: keep ``update``'s weights for masking; return what may travel (no weights, no extras)."""
    with _LOCK:
        _HELD[(run_id, server_round, update.partner)] = (update.weights, update.n_samples)
    return Update(update.partner, {}, update.n_samples, dict(update.metrics))


def held_rounds(run_id: str) -> list[tuple[int, str]]:
    """Rounds and partners whose plain updates are still held (for tests and clean-up)."""
    with _LOCK:
        return sorted((r, p) for (run, r, p) in _HELD if run == run_id)


def forget(run_id: str) -> None:
    """Drop every plain update and session of ``run_id`` still held."""
    with _LOCK:
        for key in [k for k in _HELD if k[0] == run_id]:
            del _HELD[key]


class LocalTransport:
    """Every partner's protocol steps, in this process.

    Parameters
    ----------
    signing_key
        Partner name -> its Ed25519 private key loader (None: unsigned round keys and masked vectors).
    peer_keys
        Partner name -> public key; when given, a partner refuses a roster entry its peer did not sign.
    scale
        Fixed-point scale (``2 ** scale_bits``).
    """

    def __init__(
        self,
        *,
        signing_key: Callable[[str], Ed25519PrivateKey] | None = None,
        peer_keys: Mapping[str, str] | None = None,
        scale: int = DEFAULT_SCALE,
    ):
        self._signing_key, self._peer_keys, self._scale = signing_key, peer_keys, scale
        self._sessions: dict[_Key, SecAggPartner] = {}

    def _session(self, partner: str, run_id: str, server_round: int) -> SecAggPartner:
        try:
            return self._sessions[(run_id, server_round, partner)]
        except KeyError:
            raise SecAggError(f"partner {partner!r}: no secure-aggregation session for this round") from None

    def advertise(
        self, partners: Sequence[str], *, run_id: str, server_round: int, threshold: int
    ) -> dict[str, Reply[AdvertisedKeys]]:
        return _each(
            partners, lambda n: self._advertise(n, run_id=run_id, server_round=server_round, threshold=threshold)
        )

    def share_keys(
        self, roster: Mapping[str, AdvertisedKeys], *, run_id: str, server_round: int
    ) -> dict[str, Reply[list[EncryptedShare]]]:
        return _each(list(roster), lambda n: self._session(n, run_id, server_round).share_keys(roster))

    def mask(
        self, inboxes: Mapping[str, Sequence[EncryptedShare]], *, run_id: str, server_round: int
    ) -> dict[str, Reply[tuple[MaskedUpdate, UpdateSignature | None]]]:
        return _each(list(inboxes), lambda n: self._mask(n, inboxes[n], run_id=run_id, server_round=server_round))

    def reveal(self, survivors: Sequence[str], *, run_id: str, server_round: int) -> dict[str, Reply[ShareReveal]]:
        return _each(survivors, lambda n: self._reveal(n, survivors, run_id=run_id, server_round=server_round))

    def _advertise(self, partner: str, *, run_id: str, server_round: int, threshold: int) -> AdvertisedKeys:
        key = self._signing_key(partner) if self._signing_key else None
        session = SecAggPartner(
            partner,
            run_id=run_id,
            server_round=server_round,
            threshold=threshold,
            scale=self._scale,
            signing_key=key,
            peer_keys=self._peer_keys,
        )
        self._sessions[(run_id, server_round, partner)] = session
        return session.advertise()

    def _mask(
        self, partner: str, inbox: Sequence[EncryptedShare], *, run_id: str, server_round: int
    ) -> tuple[MaskedUpdate, UpdateSignature | None]:
        with _LOCK:
            held = _HELD.pop((run_id, server_round, partner), None)
        if held is None:
            raise SecAggError(f"partner {partner!r}: no update held for round {server_round}")
        masked = self._session(partner, run_id, server_round).mask(held[0], held[1], inbox)
        signature = None
        if self._signing_key is not None:
            signature = sign_update(
                Update(partner, {}, 0),
                self._signing_key(partner),
                run_id=run_id,
                server_round=server_round,
                digest=masked_digest(masked),
                context=MASKED_CONTEXT,
            )
        return masked, signature

    def _reveal(self, partner: str, survivors: Sequence[str], *, run_id: str, server_round: int) -> ShareReveal:
        session = self._session(partner, run_id, server_round)
        try:
            return session.reveal(survivors)
        finally:
            del self._sessions[(run_id, server_round, partner)]

    def end_round(self, run_id: str, server_round: int) -> None:
        """Drop the round's sessions and held updates (partners that dropped out never cleared theirs)."""
        for key in [k for k in self._sessions if k[:2] == (run_id, server_round)]:
            del self._sessions[key]
        with _LOCK:
            for key in [k for k in _HELD if k[:2] == (run_id, server_round)]:
                del _HELD[key]


def _each(partners: Sequence[str], step: Callable[[str], T]) -> dict[str, Reply[T]]:
    """``step`` for every partner; a partner's exception is its reply (it dropped out)."""
    out: dict[str, Reply[T]] = {}
    for n in partners:
        try:
            out[n] = step(n)
        except Exception as exc:
            out[n] = exc
    return out
