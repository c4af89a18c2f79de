"""Job requests signed by the coordinator (Ed25519) and checked at the site before anything of the site is read.

Holding the shared Prefect credential lets anyone create a flow run on a partner's pool, so a flow run proves
nothing. What the site trusts is a signature by a coordinator key written in its own site config. The coordinator
signs the whole job (partner, action, run ids, round, every parameter) together with a *seal*: the federation's
name, issue and expiry times, a random nonce, and the digests of everything the job will fetch (the federation
config, the plan, the weights). The site verifies the signature over the job exactly as it arrived, refuses an
expired or replayed one, and later checks each download against its bound digest (:class:`Bindings`).

Canonical bytes: sorted-key compact ASCII JSON of ``{"context": REQUEST_CONTEXT, "job": job-without-signature}``,
computed on the raw JSON values on both sides (a parsed and re-dumped model could change ``1`` into ``1.0``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from molfed.federated.signing import load_public_key, sign_message, verify_message

REQUEST_CONTEXT = "molfed/job-request/v1"
SEAL = "request"
"""The job's key that holds the seal."""
CLOCK_SKEW_S = 120.0
"""How far in the future a request's ``issued_at`` may lie (clocks of coordinator and site differ)."""


class RequestRefused(Exception):
    """A request the site will not act on; ``str()`` is the one-line reason for the audit log and the flow run."""


def key_id(public: Ed25519PublicKey) -> str:
    """Short, stable name of a public key: the first 16 hex digits of SHA-256 over its 32 raw bytes."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def json_digest(obj: Any) -> str:
    """SHA-256 of ``obj``'s canonical JSON (what a JSON artifact is bound by)."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def _payload(job: Mapping[str, Any]) -> bytes:
    seal = {k: v for k, v in job[SEAL].items() if k != "signature"}
    return canonical({"context": REQUEST_CONTEXT, "job": {**job, SEAL: seal}})


class RequestSigner:
    """The coordinator's side: seal and sign job requests of federation ``federation``."""

    def __init__(self, private: Ed25519PrivateKey, federation: str):
        self.private, self.federation = private, federation
        self.key_id = key_id(private.public_key())

    def sign(self, job: Mapping[str, Any], *, bindings: Mapping[str, str], lifetime_s: float) -> dict[str, Any]:
        """``job`` with its seal: federation, key id, issue and expiry time, nonce, ``bindings`` and signature."""
        now = time.time()
        seal = {
            "federation": self.federation,
            "key_id": self.key_id,
            "issued_at": round(now, 3),
            "expires_at": round(now + lifetime_s, 3),
            "nonce": secrets.token_hex(16),
            "bindings": dict(bindings),
        }
        out = {**job, SEAL: seal}
        seal["signature"] = base64.b64encode(sign_message(self.private, _payload(out))).decode()
        return out


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose signature, freshness and nonce the site checked."""

    job: dict[str, Any]
    federation: str
    key_id: str
    nonce: str
    expires_at: float
    bindings: dict[str, str]


def trusted_keys(texts: Mapping[str, str]) -> dict[str, tuple[str, Ed25519PublicKey]]:
    """Key id -> (configured name, key) of the coordinator keys a site trusts.

    Raises
    ------
    ValueError
        Naming the entry whose key cannot be read.
    """
    out = {}
    for name, text in texts.items():
        try:
            key = load_public_key(text)
        except ValueError as exc:
            raise ValueError(f"trusted_coordinators.{name}: {exc}") from None
        out[key_id(key)] = (name, key)
    return out


def verify_request(
    job: Any,
    trusted: Mapping[str, tuple[str, Ed25519PublicKey]],
    *,
    max_lifetime_s: float,
    now: float | None = None,
) -> Verified:
    """Check ``job`` (raw JSON values, as the flow run's parameter arrived) was signed by a trusted key, is fresh
    and is not from the future.

    Raises
    ------
    RequestRefused
        Reasons start with ``unsigned``, ``malformed``, ``untrusted key``, ``forged``, ``expired`` or
        ``not yet valid``.
    """
    if not isinstance(job, dict):
        raise RequestRefused(f"malformed request: the job is a {type(job).__name__}, expected a mapping")
    seal = job.get(SEAL)
    if not isinstance(seal, dict) or "signature" not in seal:
        raise RequestRefused("unsigned request: no coordinator signature")
    fields: dict[str, type | tuple[type, ...]] = {
        "federation": str,
        "key_id": str,
        "issued_at": (int, float),
        "expires_at": (int, float),
        "nonce": str,
    }
    for name, kind in fields.items():
        if not isinstance(seal.get(name), kind) or isinstance(seal.get(name), bool):
            raise RequestRefused(f"malformed request: seal field {name!r} missing or of the wrong type")
    bindings = seal.get("bindings")
    if not isinstance(bindings, dict) or not all(isinstance(v, str) for v in bindings.values()):
        raise RequestRefused("malformed request: seal field 'bindings' must map names to digests")
    if set(seal) - {*fields, "bindings", "signature"}:
        unknown = sorted(set(seal) - {*fields, "bindings", "signature"})
        raise RequestRefused(f"malformed request: unknown seal fields {[str(k)[:32] for k in unknown]}")
    if seal["key_id"] not in trusted:
        raise RequestRefused(f"untrusted key: request signed by key {seal['key_id'][:16]!r}, not a trusted coordinator")
    try:
        signature = base64.b64decode(str(seal["signature"]), validate=True)
        payload = _payload(job)
    except (binascii.Error, ValueError, TypeError):
        raise RequestRefused("malformed request: signature or values not encodable") from None
    if not verify_message(trusted[seal["key_id"]][1], payload, signature):
        raise RequestRefused("forged request: the signature does not match its content")
    now = time.time() if now is None else now
    if seal["expires_at"] < now:
        raise RequestRefused(f"expired request: expired {now - seal['expires_at']:.0f} s ago")
    if seal["issued_at"] > now + CLOCK_SKEW_S:
        raise RequestRefused("not yet valid: issued in the future (check the clocks)")
    if not 0 < seal["expires_at"] - seal["issued_at"] <= max_lifetime_s:
        raise RequestRefused(
            f"expired request: valid for {seal['expires_at'] - seal['issued_at']:.0f} s, policy allows "
            f"{max_lifetime_s:.0f} s"
        )
    return Verified(
        job={k: v for k, v in job.items() if k != SEAL},
        federation=seal["federation"],
        key_id=seal["key_id"],
        nonce=seal["nonce"],
        expires_at=float(seal["expires_at"]),
        bindings=dict(bindings),
    )


class SeenNonces:
    """The nonces of requests this site accepted and that have not expired yet, kept in a file (append-only)."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: dict[str, float] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.seen[str(entry["nonce"])] = float(entry["expires_at"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash: the rest still counts

    def claim(self, nonce: str, expires_at: float, *, now: float | None = None) -> None:
        """Record ``nonce`` as used.

        Raises
        ------
        RequestRefused
            If it was used before (a replayed request).
        """
        now = time.time() if now is None else now
        if nonce in self.seen:
            raise RequestRefused("replayed request: this request's nonce was used before")
        self.seen = {n: e for n, e in self.seen.items() if e >= now - CLOCK_SKEW_S}  # expired ones are refused anyway
        self.seen[nonce] = expires_at
        append_line(self.path, json.dumps({"nonce": nonce, "expires_at": expires_at}))


def append_line(path: Path, line: str) -> None:
    """Append ``line`` to a JSON-lines file and sync it; a torn last line (a crash mid-write) is closed first, so
    the new line stays readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(line.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


class BindingError(RequestRefused):
    """Something the job fetched is not what the coordinator signed."""


def check_binding(bindings: Mapping[str, str], name: str, digest: str) -> None:
    """Raise :class:`BindingError` unless ``digest`` is the one the request bound ``name`` to."""
    if name not in bindings:
        raise BindingError(f"unbound download: the request did not sign {name!r}")
    if bindings[name] != digest:
        raise BindingError(f"tampered download: {name!r} differs from what the coordinator signed")
