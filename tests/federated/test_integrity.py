"""The coordinator's integrity guard: signatures, screens, quorum, reporting; secure rounds with dropouts."""

import numpy as np
import pytest

from molfed.federated import keys
from molfed.federated.aggregate import fedavg
from molfed.federated.integrity import GuardedStrategy, Screens, SecureSettings
from molfed.federated.sealing import seal_update
from molfed.federated.secure.local import LocalTransport, held_rounds
from molfed.federated.signing import SignedUpdate, generate_keypair, load_private_key
from molfed.federated.strategies import build_strategy
from molfed.federated.types import QuorumError, Update

RUN = "run-7"
rng = np.random.default_rng(0)
CURRENT = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
NAMES = ["a", "b", "c", "d", "e"]
PAIRS = {n: generate_keypair() for n in NAMES}
PRIVATE = {n: load_private_key(pem) for n, (pem, _) in PAIRS.items()}
PUBLIC = {n: pub for n, (_, pub) in PAIRS.items()}


def _update(name: str, seed: int, factor: float = 1.0) -> Update:
    noise = np.random.default_rng(seed)
    step = {k: 0.1 + 0.02 * noise.normal(size=v.shape) for k, v in CURRENT.items()}
    return Update(name, {k: (CURRENT[k] + factor * step[k]).astype(np.float32) for k in CURRENT}, 10 + seed)


def _signed(update: Update, server_round: int = 1, run_id: str = RUN, key: str | None = None) -> Update:
    signer = PRIVATE[key or update.partner]
    return seal_update(update, run_id=run_id, server_round=server_round, signing_key=signer)


def _guard(**kwargs):
    checks = []
    strategy = GuardedStrategy(build_strategy("fedavg"), run_id=RUN, on_round=checks.append, **kwargs)
    return strategy, checks


def test_signed_round_equals_plain_fedavg_and_reports_no_rejection():
    updates = [_update(n, i) for i, n in enumerate(NAMES)]
    guard, checks = _guard(public_keys=PUBLIC)
    outcome = guard.run_round(1, CURRENT, [_signed(u) for u in updates], min_partners=5)
    expected = fedavg([(u.weights, u.n_samples) for u in updates])
    assert all(np.array_equal(outcome.weights[k], expected[k]) for k in expected)
    assert checks[0].metrics()["updates_rejected"] == 0 and checks[0].received == 5


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda u: u, "unsigned update"),
        (lambda u: _signed(u, key="a"), "bad signature"),  # forged: made with another partner's key
        (lambda u: _signed(u, server_round=0), "replayed: signed for round 0"),
        (lambda u: _signed(u, run_id="old-run"), "replayed: signed for run"),
        (
            lambda u: SignedUpdate(u.partner, _update("e", 99).weights, u.n_samples, signature=_signed(u).signature),
            "tampered weights",
        ),
    ],
    ids=["unsigned", "forged", "old-round", "other-run", "mismatched"],
)
def test_bad_signatures_are_rejected_with_reasons_and_the_round_follows_the_quorum(make, reason):
    updates = [_signed(_update(n, i)) for i, n in enumerate(NAMES[:4])] + [make(_update("e", 4))]
    guard, checks = _guard(public_keys=PUBLIC)
    outcome = guard.run_round(1, CURRENT, updates, min_partners=4)
    assert outcome.accepted == ("a", "b", "c", "d")
    [failure] = outcome.failures
    assert failure.partner == "e" and failure.reason.startswith("signature rejected: ") and reason in failure.reason
    assert checks[0].metrics()["updates_rejected"] == 1
    guard, checks = _guard(public_keys=PUBLIC)
    with pytest.raises(QuorumError, match="e: signature rejected"):
        guard.run_round(1, CURRENT, updates, min_partners=5)
    assert len(checks[0].rejected) == 1  # reported before the round failed


def test_screens_reject_scaled_and_flipped_updates_before_the_strategy():
    updates = [_update(n, i) for i, n in enumerate(NAMES[:3])]
    updates += [_update("d", 3, factor=100.0), _update("e", 4, factor=-1.0)]
    guard, checks = _guard(screens=Screens(max_norm_ratio=3.0, min_cosine=0.0))
    outcome = guard.run_round(1, CURRENT, updates, min_partners=3)
    assert outcome.accepted == ("a", "b", "c")
    reasons = {f.partner: f.reason for f in outcome.failures}
    assert "x this round's median" in reasons["d"] and "points away" in reasons["e"]
    assert checks[0].metrics()["updates_rejected"] == 2 and set(checks[0].delta_norms) == set(NAMES)


def test_nan_update_is_counted_as_rejected_without_screens():
    bad = Update("e", {k: np.full_like(v, np.nan) for k, v in CURRENT.items()}, 5)
    guard, checks = _guard()
    outcome = guard.run_round(1, CURRENT, [_update(n, i) for i, n in enumerate(NAMES[:4])] + [bad], min_partners=4)
    assert "e" not in outcome.accepted and checks[0].metrics()["updates_rejected"] == 1


def _secure_guard(transport, **kwargs):
    checks = []
    secure = SecureSettings(transport, threshold=3)
    guard = GuardedStrategy(build_strategy("fedavg"), run_id=RUN, secure=secure, on_round=checks.append, **kwargs)
    return guard, checks


class _Dropping(LocalTransport):
    """A partner that vanishes at one protocol step."""

    def __init__(self, who: str, step: str, **kwargs):
        super().__init__(**kwargs)
        self.who, self.step = who, step

    def _gone(self, step, replies):
        return {**replies, self.who: ConnectionError("gone")} if step == self.step else replies

    def share_keys(self, roster, **kwargs):
        return self._gone("share_keys", super().share_keys(roster, **kwargs))

    def mask(self, inboxes, **kwargs):
        if self.step == "mask":
            inboxes = {n: v for n, v in inboxes.items() if n != self.who}
        return self._gone("mask", super().mask(inboxes, **kwargs))

    def reveal(self, survivors, **kwargs):
        return self._gone("reveal", super().reveal(survivors, **kwargs))


@pytest.mark.parametrize(
    ("step", "survivors"),
    [(None, NAMES), ("mask", ["a", "b", "c", "d"]), ("reveal", NAMES)],
    ids=["no-dropout", "drop-after-sharing-keys", "drop-after-masking"],
)
def test_secure_round_equals_fedavg_of_the_survivors_from_masked_vectors_only(step, survivors):
    updates = {n: _update(n, i) for i, n in enumerate(NAMES)}
    transport = _Dropping("e", step or "", signing_key=PRIVATE.__getitem__, peer_keys=PUBLIC)
    guard, checks = _secure_guard(transport, public_keys=PUBLIC)
    sent = [seal_update(u, run_id=RUN, server_round=1, secure=True) for u in updates.values()]
    assert all(not u.weights for u in sent)  # what reaches the coordinator: counts and metrics only
    outcome = guard.run_round(1, CURRENT, sent, min_partners=4)
    expected = fedavg([(updates[n].weights, updates[n].n_samples) for n in survivors])
    for k in expected:
        np.testing.assert_allclose(outcome.weights[k], expected[k], atol=1e-4)
    assert list(outcome.accepted) == survivors and checks[0].plaintext == 0
    assert held_rounds(RUN) == []


def test_secure_round_rejects_plain_weights_and_a_masked_vector_signed_with_another_key():
    updates = [_update(n, i) for i, n in enumerate(NAMES)]
    keys_used = dict(PRIVATE, d=PRIVATE["a"])  # d signs with a's key: forged
    transport = LocalTransport(signing_key=keys_used.__getitem__)
    guard, checks = _secure_guard(transport, public_keys=PUBLIC)
    sent = [seal_update(u, run_id=RUN, server_round=2, secure=True) for u in updates[:4]] + [updates[4]]
    outcome = guard.run_round(2, CURRENT, sent, min_partners=3)
    reasons = {f.partner: f.reason for f in outcome.failures}
    assert outcome.accepted == ("a", "b", "c")
    assert "plain weights refused" in reasons["e"] and "(forged or wrong key)" in reasons["d"]
    expected = fedavg([(u.weights, u.n_samples) for u in updates[:3]])
    np.testing.assert_allclose(outcome.weights["w"], expected["w"], atol=1e-4)


def test_secure_round_below_threshold_fails_the_quorum():
    transport = LocalTransport()
    guard, _ = _secure_guard(transport)
    sent = [seal_update(_update(n, i), run_id=RUN, server_round=3, secure=True) for i, n in enumerate(NAMES[:2])]
    with pytest.raises(QuorumError, match="threshold is 3"):
        guard.run_round(3, CURRENT, sent, min_partners=1)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite(tmp_path):
    public = keys.write_keypair(tmp_path)
    assert (tmp_path / keys.PRIVATE_FILE).stat().st_mode & 0o077 == 0
    assert keys.workspace_public_key(tmp_path) == public == keys.ensure_keypair(tmp_path)
    update = _update("a", 0)
    signed = seal_update(update, run_id=RUN, server_round=1, signing_key=keys.load_signing_key(tmp_path))
    guard, _ = _guard(public_keys={"a": public})
    assert guard.run_round(1, CURRENT, [signed]).accepted == ("a",)
    with pytest.raises(Exception, match="exists already"):
        keys.write_keypair(tmp_path)


def test_a_signature_survives_the_json_reply_of_sites_mode():
    import json

    from molfed.federated.signing import signature_from_json
    from tasks.integrity import signature_json

    signed = _signed(_update("a", 0))
    raw = json.loads(json.dumps(signature_json(signed)))
    back = SignedUpdate("a", signed.weights, signed.n_samples, signature=signature_from_json(raw))
    guard, _ = _guard(public_keys=PUBLIC)
    assert guard.run_round(1, CURRENT, [back]).accepted == ("a",)
    assert signature_json(_update("a", 0)) is None and signature_from_json({"partner": "a"}) is None
