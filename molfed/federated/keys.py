"""A partner's update-signing key pair, kept in its workspace.

``molfed keygen --workspace DIR`` writes ``DIR/keys/update_signing_key.pem`` (private, mode 0600, never leaves the
partner) and ``DIR/keys/update_signing_key.pub`` (base64 public key) and prints the public key, which the
coordinator's operator pastes into ``integrity.public_keys`` of the federation config.

Local mode is a simulation in which every workspace is on one machine: :func:`ensure_keypair` generates a missing key
pair per workspace and the coordinator reads the public half from there (:func:`workspace_public_key`). In a real
deployment the public keys come from the config only.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from molfed.errors import ConfigError
from molfed.federated.signing import generate_keypair, load_private_key

PRIVATE_FILE = Path("keys") / "update_signing_key.pem"
PUBLIC_FILE = Path("keys") / "update_signing_key.pub"


def write_keypair(workspace: Path, *, overwrite: bool = False) -> str:
    """Write a new key pair into ``workspace`` and return the public key (base64).

    Raises
    ------
    ConfigError
        If a key already exists and ``overwrite`` is false, or the workspace cannot be written.
    """
    public = write_private_key(workspace / PRIVATE_FILE, overwrite=overwrite)
    try:
        (workspace / PUBLIC_FILE).write_text(public + "\n", encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"{workspace}: cannot write the signing key ({type(exc).__name__})") from None
    return public


def write_private_key(path: Path, *, overwrite: bool = False) -> str:
    """Write a new Ed25519 private key to ``path`` (PEM, mode 0600); return its public key (base64).

    Raises
    ------
    ConfigError
        If a key already exists there and ``overwrite`` is false, or the file cannot be written.
    """
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: a signing key exists already; pass --force to replace it")
    pem, public = generate_keypair()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(pem)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the key ({type(exc).__name__})") from None
    return public


def ensure_keypair(workspace: Path) -> str:
    """Simulation: the workspace's public key, generating the pair first if there is none."""
    if not (workspace / PRIVATE_FILE).exists():
        return write_keypair(workspace)
    return workspace_public_key(workspace)


def load_signing_key(workspace: Path) -> Ed25519PrivateKey:
    """The partner's private signing key.

    Raises
    ------
    ConfigError
        If the key file is missing or unreadable (run ``molfed keygen --workspace``).
    """
    path = workspace / PRIVATE_FILE
    try:
        return load_private_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no signing key; run `molfed keygen --workspace {workspace}`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the signing key ({type(exc).__name__})") from None


def workspace_public_key(workspace: Path) -> str:
    """The public key written next to the private one (base64).

    Raises
    ------
    ConfigError
        If it is missing.
    """
    path = workspace / PUBLIC_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        raise ConfigError(f"{path}: no public key; run `molfed keygen --workspace {workspace}`") from None
