"""A partner's side of one secure-aggregation round. Keys, self-mask seed and shares are fresh for every round."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from molfed.federated.secure import shamir
from molfed.federated.secure.fixedpoint import DEFAULT_SCALE, encode, layout_of
from molfed.federated.secure.masks import advert_payload, channel_context, pairwise_mask, self_mask, share_points
from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.secure.primitives import agree, open_sealed, public_bytes, seal
from molfed.federated.secure.wire import advert_from_json, advert_to_json
from molfed.federated.signing import load_public_key, sign_message, verify_message
from molfed.federated.types import Weights

_SB = shamir.SHARE_BYTES


class SecAggPartner:
    """Call :meth:`advertise`, :meth:`share_keys`, :meth:`mask`, :meth:`reveal` once each, in that order.

    Parameters
    ----------
    name, run_id, server_round
        Identify the partner and bind every key and mask to this run and round.
    threshold
        Shamir threshold t: any t partners can unmask a dropped partner's pairwise masks; fewer than t learn
        nothing. Also the fewest partners a round may aggregate over. Use :func:`default_threshold`.
    scale
        Fixed-point scale agreed with the coordinator.
    signing_key, peer_keys
        Optional long-term Ed25519 identity: this partner signs its round keys with ``signing_key``, and when
        ``peer_keys`` (name -> public key text) is given it refuses a roster entry not signed by that key, so a
        coordinator cannot substitute keys (man in the middle) on the way.
    """

    def __init__(
        self,
        name: str,
        *,
        run_id: str,
        server_round: int,
        threshold: int,
        scale: int = DEFAULT_SCALE,
        signing_key: Ed25519PrivateKey | None = None,
        peer_keys: Mapping[str, str] | None = None,
    ) -> None:
        if threshold < 2:
            raise ValueError(f"got threshold={threshold}, expected >= 2 (a sum of one update is that update)")
        self.name, self.run_id, self.server_round = name, run_id, server_round
        self.threshold, self.scale = threshold, scale
        self._signing_key, self._peer_keys = signing_key, peer_keys
        self._channel = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._seed = secrets.token_bytes(32)
        self._roster: dict[str, AdvertisedKeys] | None = None
        self._shares: dict[str, tuple[int, int]] = {}  # sender -> (mask-key share, self-mask share) held for it
        self._peers: tuple[str, ...] | None = None
        self._revealed = False

    def advertise(self) -> AdvertisedKeys:
        """Step 1: this round's public keys (signed when a signing key was given)."""
        channel, mask = public_bytes(self._channel), public_bytes(self._mask_key)
        signature = None
        if self._signing_key is not None:
            payload = advert_payload(self.name, channel, mask, run_id=self.run_id, server_round=self.server_round)
            signature = sign_message(self._signing_key, payload)
        return AdvertisedKeys(self.name, channel, mask, signature)

    def share_keys(self, roster: Mapping[str, AdvertisedKeys]) -> list[EncryptedShare]:
        """Step 2: t-of-n shares of this partner's mask key and self-mask seed, one encrypted message per peer.

        Raises
        ------
        SecAggError
            If the roster lacks this partner or alters its keys, is smaller than the threshold, repeats a key, or
            (with ``peer_keys``) holds an entry not signed by its partner's configured key.
        """
        self._check_roster(roster)
        self._roster = dict(roster)
        points = share_points(roster)
        xs = [points[n] for n in sorted(roster)]
        key_shares = shamir.split(self._mask_key.private_bytes_raw(), xs, self.threshold)
        seed_shares = shamir.split(self._seed, xs, self.threshold)
        out = []
        for peer in sorted(roster):
            x = points[peer]
            if peer == self.name:
                self._shares[peer] = (key_shares[x], seed_shares[x])
                continue
            info, associated = channel_context(self.name, peer, run_id=self.run_id, server_round=self.server_round)
            key = agree(self._channel, roster[peer].channel_key, info)
            plaintext = key_shares[x].to_bytes(_SB, "big") + seed_shares[x].to_bytes(_SB, "big")
            out.append(EncryptedShare(self.name, peer, seal(key, plaintext, associated)))
        return out

    def mask(self, weights: Weights, n_samples: int, inbox: Sequence[EncryptedShare]) -> MaskedUpdate:
        """Step 3: mask ``n_samples * weights`` and ``n_samples`` with the self mask and one mask per peer.

        ``inbox`` holds the shares peers addressed to this partner; their senders (and this partner) form the peer
        set U2.

        Raises
        ------
        SecAggError
            If called out of order, a share is misaddressed, repeated or fails authentication, or fewer than
            ``threshold`` partners shared keys.
        ValueError
            From :func:`~molfed.federated.secure.fixedpoint.encode`: NaN/inf, or values that would overflow.
        """
        if self._roster is None or self._peers is not None:
            raise SecAggError(f"partner {self.name!r}: mask() must follow share_keys() and run once")
        roster = self._roster
        for share in inbox:
            if share.recipient != self.name or share.sender not in roster or share.sender == self.name:
                raise SecAggError(f"partner {self.name!r}: got a share from {share.sender!r} to {share.recipient!r}")
            if share.sender in self._shares:
                raise SecAggError(f"partner {self.name!r}: got two shares from {share.sender!r}")
            info, associated = channel_context(
                share.sender, self.name, run_id=self.run_id, server_round=self.server_round
            )
            key = agree(self._channel, roster[share.sender].channel_key, info)
            plaintext = open_sealed(key, share.ciphertext, associated)
            if plaintext is None or len(plaintext) != 2 * _SB:
                raise SecAggError(f"partner {self.name!r}: the share from {share.sender!r} failed authentication")
            self._shares[share.sender] = (
                int.from_bytes(plaintext[:_SB], "big"),
                int.from_bytes(plaintext[_SB:], "big"),
            )
        peers = tuple(sorted(self._shares))
        if len(peers) < self.threshold:
            raise SecAggError(f"only {len(peers)} partner(s) shared keys, threshold is {self.threshold}")
        vector = encode(weights, n_samples, scale=self.scale, max_partners=len(peers))
        self._peers = peers
        length = vector.size
        np.add(
            vector,
            self_mask(self._seed, partner=self.name, run_id=self.run_id, server_round=self.server_round, length=length),
            out=vector,
        )
        for peer in peers:
            if peer != self.name:
                mask = pairwise_mask(
                    self._mask_key,
                    roster[peer].mask_key,
                    me=self.name,
                    peer=peer,
                    run_id=self.run_id,
                    server_round=self.server_round,
                    length=length,
                )
                np.add(vector, mask, out=vector)
        return MaskedUpdate(self.name, self.run_id, self.server_round, peers, layout_of(weights), vector)

    def reveal(self, survivors: Collection[str]) -> ShareReveal:
        """Step 4: for each peer, its self-mask share if it survived, else its mask-key share. Once per round.

        Raises
        ------
        SecAggError
            If called twice or before :meth:`mask`, if ``survivors`` omits this partner, names a partner outside
            the peer set, or has fewer than ``threshold`` members (the coordinator could otherwise isolate one
            partner's update).
        """
        if self._peers is None or self._revealed:
            raise SecAggError(f"partner {self.name!r}: reveal() must follow mask() and run once per round")
        alive = set(survivors)
        if self.name not in alive or not alive <= set(self._peers) or len(alive) < self.threshold:
            raise SecAggError(
                f"partner {self.name!r}: refusing to reveal for survivors {sorted(alive)} "
                f"(peers {list(self._peers)}, threshold {self.threshold})"
            )
        self._revealed = True
        seed_shares = {p: self._shares[p][1] for p in self._peers if p in alive}
        key_shares = {p: self._shares[p][0] for p in self._peers if p not in alive}
        return ShareReveal(self.name, self.run_id, self.server_round, seed_shares, key_shares)

    def state(self) -> dict[str, Any]:
        """Everything this session holds, as JSON-able values, for a partner whose protocol steps run in separate
        processes (sites mode). Holds the round's private keys and the shares received: it must stay with the
        partner (see :mod:`molfed.federated.secure.site`)."""
        roster = None if self._roster is None else {n: advert_to_json(a) for n, a in self._roster.items()}
        return {
            "name": self.name,
            "run_id": self.run_id,
            "server_round": self.server_round,
            "threshold": self.threshold,
            "scale": self.scale,
            "peer_keys": None if self._peer_keys is None else dict(self._peer_keys),
            "channel": _b64(self._channel.private_bytes_raw()),
            "mask_key": _b64(self._mask_key.private_bytes_raw()),
            "seed": _b64(self._seed),
            "roster": roster,
            "shares": {n: list(pair) for n, pair in self._shares.items()},
            "peers": None if self._peers is None else list(self._peers),
            "revealed": self._revealed,
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any], *, signing_key: Ed25519PrivateKey | None = None) -> SecAggPartner:
        """The session :meth:`state` saved (``signing_key`` is never saved with it)."""
        session = cls(
            state["name"],
            run_id=state["run_id"],
            server_round=int(state["server_round"]),
            threshold=int(state["threshold"]),
            scale=int(state["scale"]),
            signing_key=signing_key,
            peer_keys=state["peer_keys"],
        )
        session._channel = X25519PrivateKey.from_private_bytes(base64.b64decode(state["channel"]))
        session._mask_key = X25519PrivateKey.from_private_bytes(base64.b64decode(state["mask_key"]))
        session._seed = base64.b64decode(state["seed"])
        roster = state["roster"]
        session._roster = None if roster is None else {n: advert_from_json(a) for n, a in roster.items()}
        session._shares = {n: (int(k), int(v)) for n, (k, v) in state["shares"].items()}
        session._peers = None if state["peers"] is None else tuple(state["peers"])
        session._revealed = bool(state["revealed"])
        return session

    def _check_roster(self, roster: Mapping[str, AdvertisedKeys]) -> None:
        if self._roster is not None:
            raise SecAggError(f"partner {self.name!r}: share_keys() runs once per round")
        mine = roster.get(self.name)
        if mine is None or (mine.channel_key, mine.mask_key) != (
            public_bytes(self._channel),
            public_bytes(self._mask_key),
        ):
            raise SecAggError(f"partner {self.name!r}: the roster lacks or alters this partner's keys")
        if len(roster) < self.threshold:
            raise SecAggError(f"roster has {len(roster)} partner(s), threshold is {self.threshold}")
        keys = [k for entry in roster.values() for k in (entry.channel_key, entry.mask_key)]
        if len(set(keys)) != len(keys) or any(len(k) != 32 for k in keys):
            raise SecAggError("roster keys must be distinct 32-byte X25519 public keys")
        for name, entry in roster.items():
            if entry.partner != name:
                raise SecAggError(f"roster entry {name!r} carries keys of {entry.partner!r}")
            if self._peer_keys is not None and name != self.name:
                self._check_signature(name, entry)

    def _check_signature(self, name: str, entry: AdvertisedKeys) -> None:
        assert self._peer_keys is not None
        if name not in self._peer_keys:
            raise SecAggError(f"partner {self.name!r}: no public key configured for peer {name!r}")
        payload = advert_payload(
            name, entry.channel_key, entry.mask_key, run_id=self.run_id, server_round=self.server_round
        )
        if entry.signature is None or not verify_message(
            load_public_key(self._peer_keys[name]), payload, entry.signature
        ):
            raise SecAggError(f"partner {self.name!r}: the round keys of {name!r} are not signed by its key")


def default_threshold(n_partners: int) -> int:
    """A strict majority, at least 2: tolerates ``n - t`` dropouts; a minority of colluders cannot unmask."""
    return max(2, n_partners // 2 + 1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
