"""Mask vectors and the protocol values both sides must compute identically."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from molfed.federated.secure.primitives import agree, context, derive_key, mask_stream


def pairwise_mask(
    private: X25519PrivateKey, peer_public: bytes, *, me: str, peer: str, run_id: str, server_round: int, length: int
) -> np.ndarray:
    """The mask ``me`` shares with ``peer`` this round, as ``me`` adds it to its vector (uint64, ``(length,)``).

    Both sides derive the same stream (X25519 + HKDF bound to run, round and the sorted pair); the partner whose
    name sorts first adds it and the other subtracts it, so the pair's masks cancel in the sum.
    """
    low, high = sorted((me, peer))
    key = agree(private, peer_public, context("pairwise-mask", run_id, server_round, low, high))
    stream = mask_stream(key, length)
    return stream if me == low else np.negative(stream)


def self_mask(seed: bytes, *, partner: str, run_id: str, server_round: int, length: int) -> np.ndarray:
    """The partner's own mask from its secret seed (uint64, ``(length,)``); removed via the seed's shares."""
    return mask_stream(derive_key(seed, context("self-mask", run_id, server_round, partner)), length)


def share_points(roster: Collection[str]) -> dict[str, int]:
    """Shamir evaluation point of each partner: its 1-based position in the sorted roster."""
    return {name: i + 1 for i, name in enumerate(sorted(roster))}


def advert_payload(partner: str, channel_key: bytes, mask_key: bytes, *, run_id: str, server_round: int) -> bytes:
    """Bytes a partner signs to vouch for its round keys."""
    return context("advertise", run_id, server_round, partner) + channel_key + mask_key


def channel_context(sender: str, recipient: str, *, run_id: str, server_round: int) -> tuple[bytes, bytes]:
    """``(HKDF info for the pair's channel key, AEAD associated data naming sender and recipient)``."""
    low, high = sorted((sender, recipient))
    return (
        context("channel", run_id, server_round, low, high),
        context("share", run_id, server_round, sender, recipient),
    )
