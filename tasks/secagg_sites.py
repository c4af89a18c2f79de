"""Secure aggregation over sites: the :class:`~molfed.federated.secure.rounds.Transport` of sites mode.

Each protocol step is one signed ``secagg-job`` run per partner, served by the partner's site agent in its warm
process (``flows/site_runner.py``), dispatched to all partners at once. The round keys need no job of their own:
each partner's round job generates them next to the update it holds back, and they arrive with its reply
(:attr:`SitePartners.adverts`). So a round costs three more jobs per partner on top of training: share keys, mask,
reveal. Parameters and replies carry protocol messages only (public keys, encrypted shares, masked vectors with
signatures, share reveals).

A partner that dropped out never gets a job telling it the round is over: its next job (or its finish job) removes
what is left of the round at its site (:func:`molfed.federated.secure.site.forget`).

The same transport carries the secure sums of calibration (:func:`molfed.federated.calibration.secure_summer`, run
id ``<run>/calibration/<step>``, round 0): the round keys come with each partner's ``calibrate`` reply, and each step
job names the calibration step, so the site uses that sum's own keys and state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from molfed import layout
from molfed.federated.calibration import secure_key
from molfed.federated.secure import wire
from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.secure.rounds import Reply
from molfed.federated.signing import UpdateSignature
from tasks.sites import SECAGG_FLOW, active

T = TypeVar("T")


class SiteTransport:
    """The partners' protocol steps as jobs at their sites, for federation run ``run_id``."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def advertise(
        self, partners: Sequence[str], *, run_id: str, server_round: int, threshold: int
    ) -> dict[str, Reply[AdvertisedKeys]]:
        adverts = active(self.run_id).adverts.get(server_round, {})
        missing = SecAggError("no round keys came with the round reply")
        return {n: wire.advert_from_json(adverts[n]) if n in adverts else missing for n in partners}

    def share_keys(
        self, roster: Mapping[str, AdvertisedKeys], *, run_id: str, server_round: int
    ) -> dict[str, Reply[list[EncryptedShare]]]:
        sent = {n: wire.advert_to_json(a) for n, a in roster.items()}
        return self._step(
            "share_keys",
            server_round,
            {n: {"roster": sent} for n in roster},
            lambda r: [wire.share_from_json(s) for s in r["shares"]],
            run_id,
        )

    def mask(
        self, inboxes: Mapping[str, Sequence[EncryptedShare]], *, run_id: str, server_round: int
    ) -> dict[str, Reply[tuple[MaskedUpdate, UpdateSignature | None]]]:
        each = {n: {"inbox": [wire.share_to_json(s) for s in inbox]} for n, inbox in inboxes.items()}
        return self._step("mask", server_round, each, lambda r: wire.masked_from_json(r["masked"]), run_id)

    def reveal(self, survivors: Sequence[str], *, run_id: str, server_round: int) -> dict[str, Reply[ShareReveal]]:
        each = {n: {"survivors": list(survivors)} for n in survivors}
        return self._step("reveal", server_round, each, lambda r: wire.reveal_from_json(r["reveal"]), run_id)

    def _session(self, run_id: str) -> dict[str, str]:
        """The job field that names which secure sum ``run_id`` is: none for the training rounds (the federation
        run's id), ``calibration`` for a calibration step's.

        Raises
        ------
        ValueError
            If ``run_id`` is neither."""
        if run_id == self.run_id:
            return {}
        for step in ("moments", "scores"):
            if run_id == secure_key(self.run_id, step):
                return {"calibration": step}
        raise ValueError(f"secure sum {run_id!r} is not one of run {self.run_id!r}")

    def end_round(self, run_id: str, server_round: int) -> None:
        """Nothing to send: survivors deleted their round state when revealing; dropouts do at their next job."""
        active(self.run_id).adverts.pop(server_round, None)

    def _step(
        self,
        action: str,
        server_round: int,
        each: Mapping[str, Mapping[str, Any]],
        decode: Callable[[Any], T],
        run_id: str,
    ) -> dict[str, Reply[T]]:
        session = self._session(run_id)
        pool = active(self.run_id)
        path = layout.secagg_reply(action, server_round, session.get("calibration"))
        replies, failures = pool._dispatch(
            action,
            server_round,
            list(each),
            flow=SECAGG_FLOW,
            each=each,
            fetch=lambda n: pool.artifacts.get_json(pool.site_runs[n], path),
            **session,
        )
        out: dict[str, Reply[T]] = {f.partner: SecAggError(f.reason) for f in failures}
        for n, reply in replies.items():
            try:
                out[n] = decode(reply)
            except (KeyError, TypeError, ValueError) as exc:  # a malformed reply is that partner's dropout
                out[n] = exc
        return out
