"""Protocol messages as JSON, for carrying them between processes (sites mode: job parameters and replies).

Only the messages of :mod:`molfed.federated.secure.messages` and masked-vector signatures have codecs here: public
keys, encrypted shares, masked vectors, share reveals. A plain update has no codec on purpose.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from molfed.federated.secure.messages import AdvertisedKeys, EncryptedShare, MaskedUpdate, ShareReveal
from molfed.federated.signing import UpdateSignature, signature_from_json, signature_to_json


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def advert_to_json(advert: AdvertisedKeys) -> dict[str, Any]:
    signature = None if advert.signature is None else _b64(advert.signature)
    return {
        "partner": advert.partner,
        "channel_key": _b64(advert.channel_key),
        "mask_key": _b64(advert.mask_key),
        "signature": signature,
    }


def advert_from_json(data: Mapping[str, Any]) -> AdvertisedKeys:
    signature = None if data.get("signature") is None else _bytes(data["signature"])
    return AdvertisedKeys(str(data["partner"]), _bytes(data["channel_key"]), _bytes(data["mask_key"]), signature)


def share_to_json(share: EncryptedShare) -> dict[str, str]:
    return {"sender": share.sender, "recipient": share.recipient, "ciphertext": _b64(share.ciphertext)}


def share_from_json(data: Mapping[str, Any]) -> EncryptedShare:
    return EncryptedShare(str(data["sender"]), str(data["recipient"]), _bytes(data["ciphertext"]))


def masked_to_json(masked: MaskedUpdate, signature: UpdateSignature | None) -> dict[str, Any]:
    """A masked vector (uint64, little-endian, base64) with its layout, peers and signature."""
    return {
        "partner": masked.partner,
        "run_id": masked.run_id,
        "server_round": masked.server_round,
        "peers": list(masked.peers),
        "layout": [[name, list(shape)] for name, shape in masked.layout],
        "vector": _b64(np.ascontiguousarray(masked.vector, dtype="<u8").tobytes()),
        "signature": None if signature is None else signature_to_json(signature),
    }


def masked_from_json(data: Mapping[str, Any]) -> tuple[MaskedUpdate, UpdateSignature | None]:
    layout = tuple((str(name), tuple(int(d) for d in shape)) for name, shape in data["layout"])
    vector = np.frombuffer(_bytes(data["vector"]), dtype="<u8").astype(np.uint64)
    masked = MaskedUpdate(
        str(data["partner"]), str(data["run_id"]), int(data["server_round"]), tuple(data["peers"]), layout, vector
    )
    return masked, signature_from_json(data.get("signature"))


def reveal_to_json(reveal: ShareReveal) -> dict[str, Any]:
    # shares are integers below a 2^k prime: as strings, since JSON readers may round large numbers
    return {
        "partner": reveal.partner,
        "run_id": reveal.run_id,
        "server_round": reveal.server_round,
        "self_mask_shares": {n: str(v) for n, v in reveal.self_mask_shares.items()},
        "mask_key_shares": {n: str(v) for n, v in reveal.mask_key_shares.items()},
    }


def reveal_from_json(data: Mapping[str, Any]) -> ShareReveal:
    return ShareReveal(
        str(data["partner"]),
        str(data["run_id"]),
        int(data["server_round"]),
        {n: int(v) for n, v in data["self_mask_shares"].items()},
        {n: int(v) for n, v in data["mask_key_shares"].items()},
    )
