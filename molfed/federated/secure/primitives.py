"""The cryptography this package uses, all from ``cryptography``: X25519, HKDF-SHA256, ChaCha20, ChaCha20-Poly1305.

Every derived key is bound by HKDF's ``info`` to a purpose label, the run id, the round and the partner names, so a
secret from one round, run or pair never yields the key of another.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL = "molfed/secagg/v1"
_NONCE_BYTES = 12


def context(label: str, run_id: str, server_round: int, *names: str) -> bytes:
    """Unambiguous bytes for ``(protocol, label, run id, round, names...)``: every field is length-prefixed."""
    fields = [PROTOCOL, label, run_id, str(server_round), *names]
    out = bytearray()
    for field in fields:
        raw = field.encode()
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def derive_key(secret: bytes, info: bytes) -> bytes:
    """32-byte key from ``secret`` by HKDF-SHA256 (no salt) with ``info`` as context."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """X25519 shared secret with ``peer_public`` (32 raw bytes), passed through HKDF with ``info``."""
    return derive_key(private.exchange(X25519PublicKey.from_public_bytes(peer_public)), info)


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def mask_stream(key: bytes, length: int) -> np.ndarray:
    """``length`` uniform uint64 ring elements: the ChaCha20 keystream of ``key`` (a one-use key, zero nonce).

    A uniform 64-bit word is uniform modulo 2^64, so no reduction bias.
    """
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 with a random nonce, returned as ``nonce || ciphertext``."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes | None:
    """Inverse of :func:`seal`; None when the ciphertext or its associated data were altered (or the key is wrong)."""
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)
    except InvalidTag:
        return None
