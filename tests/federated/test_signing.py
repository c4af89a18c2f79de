"""Signed updates: a genuine update verifies; each kind of bad update is rejected with its own reason."""

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from molfed.federated.signing import (
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_update,
    verify_update,
    verify_updates,
)
from molfed.federated.types import Update

RUN = "run-7"


@pytest.fixture(scope="module")
def keys():
    """Two partners' key pairs: name -> (private PEM, public base64)."""
    return {name: generate_keypair() for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def config(keys):
    """What the coordinator's config holds: public keys only."""
    return {name: public for name, (_, public) in keys.items()}


def _update(name="alice", n=12, seed=0):
    rng = np.random.default_rng(seed)
    return Update(name, {"w": rng.normal(size=(2, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}, n)


def _sign(keys, update, *, name=None, server_round=3, run_id=RUN):
    private = load_private_key(keys[name or update.partner][0])
    return sign_update(update, private, run_id=run_id, server_round=server_round)


def _verify(update, signature, config, server_round=3):
    return verify_update(update, signature, config, run_id=RUN, server_round=server_round)


def test_genuine_update_verifies(keys, config):
    update = _update()
    assert _verify(update, _sign(keys, update), config) is None


def test_public_key_in_pem_form_is_accepted(keys, config):
    public_pem = (
        load_private_key(keys["alice"][0])
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    update = _update()
    assert _verify(update, _sign(keys, update), {"alice": public_pem}) is None
    assert load_public_key(public_pem).public_bytes_raw() == load_public_key(config["alice"]).public_bytes_raw()


def test_unsigned_update_is_rejected(config):
    assert _verify(_update(), None, config) == "unsigned update"


def test_forged_signature_is_rejected(keys, config):
    update = _update("alice")
    forged = _sign(keys, update, name="bob")  # right fields, wrong key
    assert _verify(update, forged, config).startswith("bad signature: not made by the key configured for 'alice'")
    garbage = dataclasses.replace(_sign(keys, update), signature="not base64!")
    assert _verify(update, garbage, config) == "bad signature: not valid base64"


@pytest.mark.parametrize(
    ("server_round", "run_id", "reason"),
    [
        (2, RUN, "replayed: signed for round 2, this is round 3"),
        (3, "run-6", "replayed: signed for run 'run-6', this is run 'run-7'"),
    ],
)
def test_replayed_update_is_rejected(keys, config, server_round, run_id, reason):
    update = _update()
    assert _verify(update, _sign(keys, update, server_round=server_round, run_id=run_id), config) == reason


def test_replay_with_rewritten_round_field_still_fails_the_signature(keys, config):
    update = _update()
    old = _sign(keys, update, server_round=2)
    assert _verify(update, dataclasses.replace(old, server_round=3), config).startswith("bad signature")


def test_renamed_partner_is_rejected(keys, config):
    alice = _update("alice")
    signature = _sign(keys, alice)
    as_bob = dataclasses.replace(alice, partner="bob")
    assert _verify(as_bob, signature, config) == "renamed partner: signed by 'alice', submitted as 'bob'"
    # renaming the signature too leaves a signature that bob's key did not make
    assert _verify(as_bob, dataclasses.replace(signature, partner="bob"), config).startswith("bad signature")


def test_tampered_weights_and_sample_count_are_rejected(keys, config):
    update = _update()
    signature = _sign(keys, update)
    weights = {k: v.copy() for k, v in update.weights.items()}
    weights["w"][0, 0] += 1e-3
    tampered = dataclasses.replace(update, weights=weights)
    assert _verify(tampered, signature, config) == "tampered weights: their digest differs from the signed digest"
    inflated = dataclasses.replace(update, n_samples=10_000)
    assert _verify(inflated, signature, config) == "tampered sample count: got n_samples=10000, signed 12"


def test_unknown_partner_is_rejected(keys, config):
    update = _update("alice")
    assert (
        _verify(update, _sign(keys, update), {"bob": config["bob"]})
        == "unknown partner: no public key configured for 'alice'"
    )


def test_verify_updates_splits_accepted_from_rejected(keys, config):
    good, bad = _update("alice"), _update("bob", seed=1)
    signatures = {"alice": _sign(keys, good), "bob": _sign(keys, bad, server_round=1)}
    accepted, failures = verify_updates([good, bad], signatures, config, run_id=RUN, server_round=3)
    assert accepted == [good]
    assert [(f.partner, f.reason) for f in failures] == [
        ("bob", "signature rejected: replayed: signed for round 1, this is round 3")
    ]


def test_bad_key_material_raises_value_error(keys):
    with pytest.raises(ValueError, match="expected 32 bytes"):
        load_public_key("AAAA")
    with pytest.raises(ValueError, match="neither PEM nor valid base64"):
        load_public_key("not a key")
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with pytest.raises(ValueError, match="expected an Ed25519 private key"):
        load_private_key(ec_pem)
    assert keys["alice"][0].startswith("-----BEGIN PRIVATE KEY-----")
    assert len(load_public_key(keys["alice"][1]).public_bytes_raw()) == 32
