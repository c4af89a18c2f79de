"""Signed updates (Ed25519): the coordinator accepts an update only if its partner's key signed exactly it.

A partner signs canonical bytes of ``(run id, round, partner name, SHA-256 weights digest, n_samples)``; the private
key never leaves the partner. The coordinator holds every partner's public key (raw base64 or PEM, as written in a
config) and checks a received update with :func:`verify_update`. The signature is verified over the values the
coordinator *expects* (its run id and round, the name the update arrived under, the digest it computes itself), so
the fields copied into :class:`UpdateSignature` only serve to give a precise rejection reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from molfed.federated.types import Failure, Update, Weights

UPDATE_CONTEXT = "molfed/update/v1"
MASKED_CONTEXT = "molfed/masked-update/v1"
"""Context of a signature over a masked (secure-aggregation) vector instead of plain weights."""


@dataclass(frozen=True, slots=True)
class UpdateSignature:
    """What a partner sends next to its :class:`~molfed.federated.types.Update`."""

    partner: str
    run_id: str
    server_round: int
    digest: str
    """:func:`~molfed.federated.weights.weights_digest` of the signed weights (hex SHA-256)."""
    n_samples: int
    signature: str
    """Base64 Ed25519 signature (64 bytes) over :func:`update_payload`."""


@dataclass(frozen=True, slots=True)
class SignedUpdate(Update):
    """An :class:`~molfed.federated.types.Update` travelling with its partner's signature (None: unsigned)."""

    signature: UpdateSignature | None = None


def signature_to_json(signature: UpdateSignature) -> dict[str, str | int]:
    """JSON-able fields of ``signature`` (for replies that travel as JSON, e.g. sites mode)."""
    return {
        "partner": signature.partner,
        "run_id": signature.run_id,
        "server_round": signature.server_round,
        "digest": signature.digest,
        "n_samples": signature.n_samples,
        "signature": signature.signature,
    }


def signature_from_json(raw: Mapping[str, object] | None) -> UpdateSignature | None:
    """Inverse of :func:`signature_to_json`; None for a missing or malformed entry (the update is then unsigned)."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return UpdateSignature(
            partner=str(raw["partner"]),
            run_id=str(raw["run_id"]),
            server_round=int(raw["server_round"]),  # type: ignore[call-overload]
            digest=str(raw["digest"]),
            n_samples=int(raw["n_samples"]),  # type: ignore[call-overload]
            signature=str(raw["signature"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 key pair: ``(private key as unencrypted PKCS#8 PEM, public key as base64 of its 32 raw bytes)``.

    The PEM stays with the partner (a file readable only by it); the base64 string goes into the coordinator's config.
    """
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, public_key_text(private)


def public_key_text(private: Ed25519PrivateKey) -> str:
    """Base64 of the 32 raw public-key bytes."""
    return base64.b64encode(private.public_key().public_bytes_raw()).decode()


def load_private_key(pem: str | bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PEM.

    Raises
    ------
    ValueError
        If the PEM cannot be read or holds another kind of key.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"got a {type(key).__name__}, expected an Ed25519 private key")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """Read an Ed25519 public key from base64 of its 32 raw bytes, or from PEM (SubjectPublicKeyInfo).

    Raises
    ------
    ValueError
        If ``text`` is neither, or holds another kind of key.
    """
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(stripped.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"got a {type(key).__name__}, expected an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(stripped, validate=True)
    except binascii.Error:
        raise ValueError("public key is neither PEM nor valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"got a {len(raw)}-byte public key, expected 32 bytes (Ed25519, raw, base64)")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_message(private: Ed25519PrivateKey, payload: bytes) -> bytes:
    return private.sign(payload)


def verify_message(public: Ed25519PublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def update_payload(
    *, run_id: str, server_round: int, partner: str, digest: str, n_samples: int, context: str = UPDATE_CONTEXT
) -> bytes:
    """Canonical bytes that are signed: sorted-key compact ASCII JSON with a context tag."""
    fields = {
        "context": context,
        "run_id": run_id,
        "round": int(server_round),
        "partner": partner,
        "digest": digest,
        "n_samples": int(n_samples),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_update(
    update: Update,
    private: Ed25519PrivateKey,
    *,
    run_id: str,
    server_round: int,
    digest: str | None = None,
    context: str = UPDATE_CONTEXT,
) -> UpdateSignature:
    """Partner side: sign ``update`` for this run and round.

    ``digest`` defaults to :func:`~molfed.federated.weights.weights_digest` of the update's weights; under secure
    aggregation it is the masked vector's digest, signed with ``context=MASKED_CONTEXT``.
    """
    digest = _weights_digest(update.weights) if digest is None else digest
    payload = update_payload(
        run_id=run_id,
        server_round=server_round,
        partner=update.partner,
        digest=digest,
        n_samples=update.n_samples,
        context=context,
    )
    signature = base64.b64encode(sign_message(private, payload)).decode()
    return UpdateSignature(update.partner, run_id, server_round, digest, update.n_samples, signature)


def verify_update(
    update: Update,
    signature: UpdateSignature | None,
    public_keys: Mapping[str, str],
    *,
    run_id: str,
    server_round: int,
    digest: str | None = None,
    context: str = UPDATE_CONTEXT,
) -> str | None:
    """Coordinator side: why ``update`` must be rejected, or None if its partner's key signed exactly it.

    Reasons start with ``unsigned``, ``renamed partner``, ``unknown partner``, ``replayed``, ``tampered`` or
    ``bad signature`` (forged, or made with another key). ``digest`` and ``context`` as in :func:`sign_update`
    (the coordinator computes the digest itself).

    Raises
    ------
    ValueError
        If the configured public key of ``update.partner`` cannot be read (a configuration error).
    """
    if signature is None:
        return "unsigned update"
    if signature.partner != update.partner:
        return f"renamed partner: signed by {signature.partner!r}, submitted as {update.partner!r}"
    if update.partner not in public_keys:
        return f"unknown partner: no public key configured for {update.partner!r}"
    if signature.run_id != run_id:
        return f"replayed: signed for run {signature.run_id!r}, this is run {run_id!r}"
    if signature.server_round != server_round:
        return f"replayed: signed for round {signature.server_round}, this is round {server_round}"
    digest = _weights_digest(update.weights) if digest is None else digest
    if signature.digest != digest:
        return "tampered weights: their digest differs from the signed digest"
    if signature.n_samples != update.n_samples:
        return f"tampered sample count: got n_samples={update.n_samples}, signed {signature.n_samples}"
    payload = update_payload(
        run_id=run_id,
        server_round=server_round,
        partner=update.partner,
        digest=digest,
        n_samples=update.n_samples,
        context=context,
    )
    try:
        raw = base64.b64decode(signature.signature, validate=True)
    except binascii.Error:
        return "bad signature: not valid base64"
    if not verify_message(load_public_key(public_keys[update.partner]), payload, raw):
        return f"bad signature: not made by the key configured for {update.partner!r} (forged or wrong key)"
    return None


def verify_updates(
    updates: Sequence[Update],
    signatures: Mapping[str, UpdateSignature],
    public_keys: Mapping[str, str],
    *,
    run_id: str,
    server_round: int,
) -> tuple[list[Update], list[Failure]]:
    """Split ``updates`` into verified ones and :class:`Failure` s (``"signature rejected: <reason>"``).

    ``signatures`` is keyed by the partner name each signature arrived under.
    """
    accepted: list[Update] = []
    rejected: list[Failure] = []
    for update in updates:
        reason = verify_update(
            update, signatures.get(update.partner), public_keys, run_id=run_id, server_round=server_round
        )
        if reason is None:
            accepted.append(update)
        else:
            rejected.append(Failure(update.partner, f"signature rejected: {reason}"))
    return accepted, rejected


def _weights_digest(weights: Weights) -> str:
    # imported here: molfed.federated.weights pulls in torch, which a site's secure-aggregation steps never need
    from molfed.federated.weights import weights_digest

    return weights_digest(weights)
