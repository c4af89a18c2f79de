"""What travels in one round of secure aggregation (Bonawitz et al. 2017, semi-honest variant with dropout recovery).

All messages go through the coordinator: partners never talk to each other directly. The order is

1. each partner sends :class:`AdvertisedKeys`; the coordinator broadcasts the roster (U1) to all;
2. each partner sends one :class:`EncryptedShare` per peer; the coordinator delivers each to its recipient;
3. each partner sends a :class:`MaskedUpdate`; the senders form the survivor set (U3);
4. each survivor sends a :class:`ShareReveal` for that survivor set; the coordinator unmasks the sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from molfed.federated.secure.fixedpoint import Layout


class SecAggError(RuntimeError):
    """The round cannot continue: a protocol message is missing, inconsistent or forged. Names partners, never data."""


@dataclass(frozen=True, slots=True)
class AdvertisedKeys:
    """A partner's public keys for one round (fresh every round)."""

    partner: str
    channel_key: bytes
    """X25519 public key (32 bytes) for encrypting secret shares between partners."""
    mask_key: bytes
    """X25519 public key (32 bytes) for the pairwise masks."""
    signature: bytes | None = None
    """Ed25519 signature over both keys, run and round with the partner's long-term key, when partners sign."""


@dataclass(frozen=True, slots=True)
class EncryptedShare:
    """Sender's Shamir shares of its mask key and self-mask seed, encrypted for one recipient."""

    sender: str
    recipient: str
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class MaskedUpdate:
    """A partner's masked, sample-weighted update: uniform-looking without the matching masks."""

    partner: str
    run_id: str
    server_round: int
    peers: tuple[str, ...]
    """Sorted partners (itself included) whose pairwise masks are in ``vector``: the set U2."""
    layout: Layout
    """Sorted tensor names and shapes encoded in ``vector``."""
    vector: np.ndarray
    """uint64, shape ``(P + 1,)``: ``encode(n_k * w_k, n_k) + self mask + pairwise masks`` modulo 2^64."""


@dataclass(frozen=True, slots=True)
class ShareReveal:
    """A survivor's shares revealed for unmasking: per peer, a self-mask share *or* a mask-key share, never both."""

    partner: str
    run_id: str
    server_round: int
    self_mask_shares: Mapping[str, int]
    """Shares of each survivor's self-mask seed, by survivor name (the set U3)."""
    mask_key_shares: Mapping[str, int]
    """Shares of each dropped partner's mask private key, by dropped partner name (the set U2 minus U3)."""
