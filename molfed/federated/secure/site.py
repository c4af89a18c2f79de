"""A partner's side of secure aggregation when each protocol step is a separate job at its site (sites mode).

Between jobs the partner's round secrets (its X25519 keys, self-mask seed, the roster, the shares it received) and
its plain update wait in its own workspace, under ``<workspace>/federation_state/<run>/secagg/round_NNNN/``
(files readable by the partner only). Nothing here is ever sent: the functions return only protocol messages.

- :func:`hold` (end of the round's training job): keep the update, start the round's session, return its round keys;
- :func:`share_keys`, :func:`mask`, :func:`reveal`: one protocol step each (:mod:`molfed.federated.secure.partner`);
  the plain update is deleted once masked, the whole round directory once the shares are revealed;
- :func:`forget`: a partner that dropped out of a round never got to reveal; its next job removes what is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.secure.partner import SecAggPartner
from molfed.federated.secure.rounds import masked_digest
from molfed.federated.signing import MASKED_CONTEXT, UpdateSignature, sign_update
from molfed.federated.types import Update, Weights

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
SESSION, HELD = "session.json", "held_update.npz"


def run_dir(workspace: Path, run_id: str) -> Path:
    """This run's secure-aggregation state in the partner's workspace."""
    return Path(workspace) / "federation_state" / _SAFE.sub("_", run_id) / "secagg"


def round_dir(workspace: Path, run_id: str, server_round: int) -> Path:
    return run_dir(workspace, run_id) / f"round_{server_round:04d}"


def hold(
    workspace: Path,
    update: Update,
    *,
    run_id: str,
    server_round: int,
    threshold: int,
    scale: int,
    signing_key: Ed25519PrivateKey | None = None,
    peer_keys: Mapping[str, str] | None = None,
) -> AdvertisedKeys:
    """Keep ``update`` in the workspace for masking and return this round's (signed) public keys.

    Earlier rounds' leftovers of this run are removed first.
    """
    forget(workspace, run_id)
    directory = round_dir(workspace, run_id, server_round)
    directory.mkdir(parents=True, mode=0o700)
    with _private(directory / HELD, "wb") as f:
        arrays: dict[str, Any] = {f"w/{k}": np.asarray(v) for k, v in update.weights.items()}
        np.savez(f, n=np.int64(update.n_samples), **arrays)
    session = SecAggPartner(
        update.partner,
        run_id=run_id,
        server_round=server_round,
        threshold=threshold,
        scale=scale,
        signing_key=signing_key,
        peer_keys=peer_keys,
    )
    advert = session.advertise()
    _save(directory, session, signs=signing_key is not None)
    return advert


def share_keys(
    workspace: Path, roster: Mapping[str, AdvertisedKeys], *, run_id: str, server_round: int
) -> list[EncryptedShare]:
    """Step 2 for the session held in ``workspace`` (raises :class:`SecAggError` as the session does)."""
    directory = round_dir(workspace, run_id, server_round)
    session, signs = _load(directory)
    shares = session.share_keys(roster)
    _save(directory, session, signs=signs)
    return shares


def mask(
    workspace: Path,
    inbox: Sequence[EncryptedShare],
    *,
    run_id: str,
    server_round: int,
    load_key: Callable[[], Ed25519PrivateKey] | None = None,
) -> tuple[MaskedUpdate, UpdateSignature | None]:
    """Step 3: mask the held update, delete it, and sign the masked vector if the round keys were signed
    (with the key ``load_key`` returns).

    Raises
    ------
    SecAggError
        As the session's :meth:`~molfed.federated.secure.partner.SecAggPartner.mask`, if no update is held, or if
        the round needs a signature and ``load_key`` is None.
    """
    directory = round_dir(workspace, run_id, server_round)
    session, signs = _load(directory)
    if signs and load_key is None:
        raise SecAggError(f"partner {session.name!r}: this round's masked vector must be signed; no key given")
    try:
        with np.load(directory / HELD, allow_pickle=False) as held:
            weights: Weights = {k.removeprefix("w/"): held[k] for k in held.files if k.startswith("w/")}
            n_samples = int(held["n"])
    except FileNotFoundError:
        raise SecAggError(f"partner {session.name!r}: no update held for round {server_round}") from None
    masked = session.mask(weights, n_samples, inbox)
    (directory / HELD).unlink()
    _save(directory, session, signs=signs)
    signature = None
    if signs and load_key is not None:
        carrier = Update(session.name, {}, 0)
        signature = sign_update(
            carrier,
            load_key(),
            run_id=run_id,
            server_round=server_round,
            digest=masked_digest(masked),
            context=MASKED_CONTEXT,
        )
    return masked, signature


def reveal(workspace: Path, survivors: Collection[str], *, run_id: str, server_round: int) -> ShareReveal:
    """Step 4, then the round's secrets are deleted (also when the session refuses to reveal)."""
    directory = round_dir(workspace, run_id, server_round)
    try:
        return _load(directory)[0].reveal(survivors)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def forget(workspace: Path, run_id: str, *, keep: int | None = None) -> None:
    """Delete this run's held updates and round secrets, except round ``keep``'s."""
    base = run_dir(workspace, run_id)
    if not base.is_dir():
        return
    for directory in base.glob("round_*"):
        if keep is None or directory.name != f"round_{keep:04d}":
            shutil.rmtree(directory, ignore_errors=True)
    if keep is None:
        shutil.rmtree(base, ignore_errors=True)


def _private(path: Path, mode: str) -> IO[Any]:
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), mode)


def _save(directory: Path, session: SecAggPartner, *, signs: bool) -> None:
    tmp = directory / f"{SESSION}.tmp"
    with _private(tmp, "w") as f:
        json.dump({**session.state(), "signs": signs}, f)
    tmp.replace(directory / SESSION)


def _load(directory: Path) -> tuple[SecAggPartner, bool]:
    try:
        state = json.loads((directory / SESSION).read_text())
    except FileNotFoundError:
        raise SecAggError("no secure-aggregation session for this round at this partner") from None
    return SecAggPartner.restore(state), bool(state.get("signs"))
