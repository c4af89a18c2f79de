"""Signed job requests: the site acts only on a fresh, unreplayed job a trusted coordinator key signed as it is."""

import copy
import json

import pytest

from molfed.federated.signing import generate_keypair, load_private_key
from molfed.site.requests import (
    CLOCK_SKEW_S,
    SEAL,
    BindingError,
    RequestRefused,
    RequestSigner,
    SeenNonces,
    check_binding,
    key_id,
    trusted_keys,
    verify_request,
)

CONFIG_DIGEST = "c" * 64
HOUR = 3600.0


@pytest.fixture
def signed(signer, job):
    """A sealed round job with options and one binding, valid for ten minutes."""
    job = {**job, "action": "round", "server_round": 3, "options": {"lr": 0.01, "mu": 1}}
    return signer.sign(job, bindings={"config": CONFIG_DIGEST}, lifetime_s=600)


def _refusal(job, trusted, **kwargs) -> str:
    kwargs.setdefault("max_lifetime_s", HOUR)
    with pytest.raises(RequestRefused) as err:
        verify_request(job, trusted, **kwargs)
    return str(err.value)


def test_a_signed_job_verifies_and_comes_back_without_its_seal(signed, trusted, signer):
    verified = verify_request(signed, trusted, max_lifetime_s=HOUR)
    assert SEAL not in verified.job
    assert verified.job == {k: v for k, v in signed.items() if k != SEAL}
    assert verified.federation == "fed-name"
    assert verified.key_id == signer.key_id
    assert verified.bindings == {"config": CONFIG_DIGEST}
    assert verified.nonce == signed[SEAL]["nonce"] and len(verified.nonce) == 32
    assert verified.expires_at == signed[SEAL]["expires_at"]


def _set(path, value):
    def tamper(job):
        *parents, last = path
        target = job
        for name in parents:
            target = target[name]
        target[last] = value(target[last]) if callable(value) else value

    return tamper


@pytest.mark.parametrize(
    "tamper",
    [
        _set(["partner"], "alpha"),
        _set(["action"], "finish"),
        _set(["server_round"], 4),
        _set(["options", "lr"], 0.02),
        _set([SEAL, "bindings", "config"], "d" * 64),
        _set([SEAL, "expires_at"], lambda t: t + 86_400),
        _set([SEAL, "issued_at"], lambda t: t + 1),
        _set([SEAL, "nonce"], "0" * 32),
        _set([SEAL, "federation"], "other-fed"),
        lambda job: job.update(local_only=True),
        lambda job: job[SEAL]["bindings"].update(weights="e" * 64),
        lambda job: job.pop("options"),
    ],
    ids=[
        "partner",
        "action",
        "server_round",
        "option",
        "binding",
        "expires_at",
        "issued_at",
        "nonce",
        "federation",
        "added-field",
        "added-binding",
        "removed-field",
    ],
)
def test_changing_any_part_of_a_signed_job_makes_it_forged(signed, trusted, tamper):
    tampered = copy.deepcopy(signed)
    tamper(tampered)
    assert tampered != signed
    assert _refusal(tampered, trusted).startswith("forged request")


def test_int_and_float_values_survive_a_json_round_trip_and_are_signed_as_sent(signed, trusted):
    arrived = json.loads(json.dumps(signed))
    verified = verify_request(arrived, trusted, max_lifetime_s=HOUR)
    assert verified.job["options"] == {"lr": 0.01, "mu": 1}
    assert type(verified.job["options"]["mu"]) is int and type(verified.job["server_round"]) is int
    # the coordinator signed 1, not 1.0: a re-dumped model changing the type is not what was signed
    arrived["options"]["mu"] = 1.0
    assert _refusal(arrived, trusted).startswith("forged request")


def test_a_job_signed_by_a_key_the_site_does_not_trust_is_refused(job, trusted):
    stranger = RequestSigner(load_private_key(generate_keypair()[0]), "fed-name")
    assert _refusal(stranger.sign(job, bindings={}, lifetime_s=600), trusted).startswith("untrusted key")


def test_a_foreign_signature_under_the_trusted_key_id_is_forged(job, trusted, signer):
    stranger = RequestSigner(load_private_key(generate_keypair()[0]), "fed-name")
    stranger.key_id = signer.key_id  # claims to be the coordinator
    assert _refusal(stranger.sign(job, bindings={}, lifetime_s=600), trusted).startswith("forged request")


def test_a_job_without_seal_or_signature_is_unsigned(signed, trusted, job):
    assert _refusal(job, trusted).startswith("unsigned request")
    no_signature = copy.deepcopy(signed)
    del no_signature[SEAL]["signature"]
    assert _refusal(no_signature, trusted).startswith("unsigned request")
    assert _refusal({**job, SEAL: "signed, trust me"}, trusted).startswith("unsigned request")


def test_a_job_that_is_not_a_mapping_is_malformed(trusted):
    assert _refusal(["job"], trusted).startswith("malformed request")


def test_a_seal_field_of_the_wrong_type_is_malformed(signed, trusted):
    bad = copy.deepcopy(signed)
    bad[SEAL]["expires_at"] = str(bad[SEAL]["expires_at"])
    assert _refusal(bad, trusted) == "malformed request: seal field 'expires_at' missing or of the wrong type"


def test_extra_seal_fields_are_refused(signed, trusted):
    bad = copy.deepcopy(signed)
    bad[SEAL]["scope"] = "everything"
    reason = _refusal(bad, trusted)
    assert reason.startswith("malformed request: unknown seal fields") and "'scope'" in reason


def test_the_unknown_seal_fields_named_are_only_the_unknown_ones(signed, trusted):
    bad = copy.deepcopy(signed)
    bad[SEAL]["scope"] = "everything"
    assert _refusal(bad, trusted) == "malformed request: unknown seal fields ['scope']"


def test_an_expired_job_is_refused(signed, trusted):
    expires_at = signed[SEAL]["expires_at"]
    verify_request(signed, trusted, max_lifetime_s=HOUR, now=expires_at)  # valid up to its expiry
    assert _refusal(signed, trusted, now=expires_at + 1).startswith("expired request")


def test_a_job_issued_in_the_future_is_not_yet_valid(signed, trusted):
    issued_at = signed[SEAL]["issued_at"]
    verify_request(signed, trusted, max_lifetime_s=HOUR, now=issued_at - CLOCK_SKEW_S + 1)  # within clock skew
    assert _refusal(signed, trusted, now=issued_at - CLOCK_SKEW_S - 60).startswith("not yet valid")


def test_a_job_valid_for_longer_than_the_site_allows_is_refused(signer, job, trusted):
    long_lived = signer.sign(job, bindings={}, lifetime_s=2 * HOUR)
    verify_request(long_lived, trusted, max_lifetime_s=2 * HOUR + 1)
    reason = _refusal(long_lived, trusted, max_lifetime_s=HOUR)
    assert reason.startswith("expired request: valid for 7200 s") and "allows 3600 s" in reason


def test_a_nonce_is_accepted_once_also_after_reopening_the_file(tmp_path):
    path = tmp_path / "agent" / "nonces.jsonl"
    nonces = SeenNonces(path)
    nonces.claim("n1", 2_000.0, now=1_000.0)
    nonces.claim("n2", 2_000.0, now=1_000.0)
    with pytest.raises(RequestRefused, match="^replayed request"):
        nonces.claim("n1", 2_000.0, now=1_001.0)
    reopened = SeenNonces(path)
    with pytest.raises(RequestRefused, match="^replayed request"):
        reopened.claim("n2", 2_000.0, now=1_002.0)
    reopened.claim("n3", 2_000.0, now=1_002.0)


def test_a_torn_last_line_of_the_nonce_file_is_skipped(tmp_path):
    path = tmp_path / "nonces.jsonl"
    path.write_text('{"nonce": "n1", "expires_at": 2000.0}\n{"nonce": "n2", "expi', encoding="utf-8")
    nonces = SeenNonces(path)
    assert nonces.seen == {"n1": 2000.0}
    with pytest.raises(RequestRefused, match="^replayed request"):
        nonces.claim("n1", 2_000.0, now=1_000.0)
    nonces.claim("n3", 2_000.0, now=1_000.0)


def test_a_nonce_claimed_after_a_torn_line_is_still_refused_after_a_restart(tmp_path):
    path = tmp_path / "nonces.jsonl"
    path.write_text('{"nonce": "n1", "expires_at": 2000.0}\n{"nonce": "n2", "expi', encoding="utf-8")
    SeenNonces(path).claim("n3", 2_000.0, now=1_000.0)
    with pytest.raises(RequestRefused, match="^replayed request"):
        SeenNonces(path).claim("n3", 2_000.0, now=1_000.0)


def test_a_download_must_match_the_digest_the_request_bound_it_to():
    bindings = {"config": CONFIG_DIGEST}
    check_binding(bindings, "config", CONFIG_DIGEST)
    with pytest.raises(BindingError, match="^unbound download: the request did not sign 'plan'"):
        check_binding(bindings, "plan", CONFIG_DIGEST)
    with pytest.raises(BindingError, match="^tampered download: 'config' differs"):
        check_binding(bindings, "config", "d" * 64)
    assert issubclass(BindingError, RequestRefused)


def test_trusted_keys_are_indexed_by_key_id_and_a_bad_key_names_its_entry(coordinator_key):
    private, public = coordinator_key
    ((kid, (name, _key)),) = trusted_keys({"coordinator": public}).items()
    assert kid == key_id(load_private_key(private).public_key()) and name == "coordinator"
    with pytest.raises(ValueError, match="^trusted_coordinators.backup: "):
        trusted_keys({"coordinator": public, "backup": "bm90IGEga2V5"})
