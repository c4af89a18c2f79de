"""The coordinator's side: screen masked updates, then remove the masks from their sum. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from molfed.federated.secure import shamir
from molfed.federated.secure.fixedpoint import DEFAULT_SCALE, decode, layout_of, vector_length
from molfed.federated.secure.masks import pairwise_mask, self_mask, share_points
from molfed.federated.secure.messages import AdvertisedKeys, MaskedUpdate, SecAggError, ShareReveal
from molfed.federated.secure.primitives import public_bytes
from molfed.federated.types import Weights


def check_masked(update: MaskedUpdate, *, template: Weights, run_id: str, server_round: int) -> str | None:
    """Why ``update`` cannot enter this round's sum, or None. Its values are masked: only metadata can be checked.

    A rejected partner is left out of the survivor set, and its pairwise masks are removed like a dropout's.
    """
    if (update.run_id, update.server_round) != (run_id, server_round):
        return f"masked for run {update.run_id!r} round {update.server_round}, expected {run_id!r} round {server_round}"
    layout = layout_of(template)
    if update.layout != layout:
        return "tensor names or shapes differ from the global model's"
    if update.vector.dtype != np.uint64 or update.vector.shape != (vector_length(layout),):
        expected = (vector_length(layout),)
        return f"got a {update.vector.dtype} vector of shape {update.vector.shape}, expected uint64 {expected}"
    return None


def unmask_vector(
    masked: Sequence[MaskedUpdate],
    reveals: Sequence[ShareReveal],
    roster: Mapping[str, AdvertisedKeys],
    *,
    run_id: str,
    server_round: int,
    threshold: int,
) -> np.ndarray:
    """The ring sum of the survivors' encoded updates, ``sum_k encode(n_k w_k, n_k)`` (uint64), masks removed.

    ``masked`` are the screened updates of the survivors (U3), ``reveals`` the share reveals received for exactly
    that survivor set, ``roster`` the keys broadcast in step 1.

    Raises
    ------
    SecAggError
        If fewer than ``threshold`` partners survived or revealed, the updates disagree on their peer set, a reveal
        is for another survivor set, or shares are inconsistent or reconstruct a key other than the advertised one.
    """
    if len(masked) < threshold:
        raise SecAggError(f"{len(masked)} masked update(s) arrived, threshold is {threshold}")
    survivors = [m.partner for m in masked]
    if len(set(survivors)) != len(survivors):
        raise SecAggError(f"duplicate masked updates among {sorted(survivors)}")
    peers = masked[0].peers
    if any(m.peers != peers for m in masked) or not set(survivors) <= set(peers) or not set(peers) <= set(roster):
        raise SecAggError("masked updates disagree on their peer set, or it exceeds the roster")
    stamps = [(m.run_id, m.server_round) for m in masked] + [(r.run_id, r.server_round) for r in reveals]
    if any(stamp != (run_id, server_round) for stamp in stamps):
        raise SecAggError(f"a message is not for run {run_id!r} round {server_round}")
    if any(m.vector.dtype != np.uint64 or m.vector.shape != masked[0].vector.shape for m in masked):
        raise SecAggError("masked vectors differ in dtype or length (screen them with check_masked)")
    alive = set(survivors)
    dropped = sorted(set(peers) - alive)
    revealers = [r.partner for r in reveals]
    if len(set(revealers)) != len(revealers) or not set(revealers) <= alive:
        raise SecAggError(f"reveals must come from distinct survivors, got {sorted(revealers)}")
    if len(reveals) < threshold:
        raise SecAggError(
            f"{len(reveals)} of {len(alive)} surviving partners revealed shares; threshold is {threshold}"
        )
    for r in reveals:
        if set(r.self_mask_shares) != alive or set(r.mask_key_shares) != set(dropped):
            raise SecAggError(f"partner {r.partner!r} revealed shares for another survivor set")

    points = share_points(roster)
    length = masked[0].vector.size
    total = np.zeros(length, dtype=np.uint64)
    for m in masked:
        np.add(total, m.vector, out=total)
    for name in sorted(alive):
        seed = _combine({points[r.partner]: r.self_mask_shares[name] for r in reveals}, threshold, name, "self-mask")
        np.subtract(
            total, self_mask(seed, partner=name, run_id=run_id, server_round=server_round, length=length), out=total
        )
    for name in dropped:
        raw = _combine({points[r.partner]: r.mask_key_shares[name] for r in reveals}, threshold, name, "mask key")
        key = X25519PrivateKey.from_private_bytes(raw)
        if public_bytes(key) != roster[name].mask_key:
            raise SecAggError(f"the recovered mask key of {name!r} does not match its advertised key")
        for survivor in sorted(alive):
            # the survivor added pairwise_mask(survivor -> name); the same stream from the dropped side is its negation
            mask = pairwise_mask(
                key,
                roster[survivor].mask_key,
                me=name,
                peer=survivor,
                run_id=run_id,
                server_round=server_round,
                length=length,
            )
            np.add(total, mask, out=total)
    return total


def unmask_sum(
    masked: Sequence[MaskedUpdate],
    reveals: Sequence[ShareReveal],
    roster: Mapping[str, AdvertisedKeys],
    *,
    template: Weights,
    run_id: str,
    server_round: int,
    threshold: int,
    scale: int = DEFAULT_SCALE,
) -> tuple[dict[str, np.ndarray], int]:
    """``(sum_k n_k w_k as float64 arrays, N = sum_k n_k)`` over the survivors. See :func:`unmask_vector`.

    Raises
    ------
    SecAggError
        As :func:`unmask_vector`, or if a masked update fails :func:`check_masked` (screen them first).
    """
    for m in masked:
        problem = check_masked(m, template=template, run_id=run_id, server_round=server_round)
        if problem:
            raise SecAggError(f"partner {m.partner!r}: {problem}")
    total = unmask_vector(masked, reveals, roster, run_id=run_id, server_round=server_round, threshold=threshold)
    try:
        return decode(total, layout_of(template), scale=scale)
    except ValueError as exc:
        raise SecAggError(str(exc)) from None


def secure_fedavg(
    masked: Sequence[MaskedUpdate],
    reveals: Sequence[ShareReveal],
    roster: Mapping[str, AdvertisedKeys],
    *,
    template: Weights,
    run_id: str,
    server_round: int,
    threshold: int,
    scale: int = DEFAULT_SCALE,
) -> dict[str, np.ndarray]:
    """FedAvg of the survivors' updates, learning only the sums: ``sum_k n_k w_k / sum_k n_k`` as float32.

    Within ``K / (2 scale N)`` of :func:`molfed.federated.aggregate.fedavg` (see
    :mod:`~molfed.federated.secure.fixedpoint`). Raises as :func:`unmask_sum`.
    """
    sums, total_n = unmask_sum(
        masked,
        reveals,
        roster,
        template=template,
        run_id=run_id,
        server_round=server_round,
        threshold=threshold,
        scale=scale,
    )
    return {name: (value / total_n).astype(np.float32) for name, value in sums.items()}


def _combine(shares: dict[int, int], threshold: int, owner: str, what: str) -> bytes:
    try:
        return shamir.combine(shares, threshold)
    except ValueError as exc:
        raise SecAggError(f"cannot recover the {what} of {owner!r}: {exc}") from None
