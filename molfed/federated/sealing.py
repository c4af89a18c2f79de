"""The partner's side of update integrity: what it does to its update before the update leaves it.

With signing on, the update travels as a :class:`~molfed.federated.signing.SignedUpdate` signed over run id, round,
partner name, weights digest and sample count. With secure aggregation on, the weights stay with the partner
(:func:`molfed.federated.secure.local.hold_update`) until it masks them at the coordinator's request; the masked
vector is signed instead.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from molfed.federated.secure.local import hold_update
from molfed.federated.signing import SignedUpdate, sign_update
from molfed.federated.types import Update


def seal_update(
    update: Update,
    *,
    run_id: str,
    server_round: int,
    signing_key: Ed25519PrivateKey | None = None,
    secure: bool = False,
) -> Update:
    """``update`` as it may leave the partner this round (unchanged when neither option is on)."""
    if secure:
        return hold_update(update, run_id=run_id, server_round=server_round)
    if signing_key is None:
        return update
    signature = sign_update(update, signing_key, run_id=run_id, server_round=server_round)
    return SignedUpdate(update.partner, update.weights, update.n_samples, update.metrics, update.extras, signature)
