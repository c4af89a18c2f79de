"""Secure aggregation: exactness, cancellation, hiding, binding to run and round, dropouts, guards."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from molfed.federated import secure
from molfed.federated.aggregate import fedavg
from molfed.federated.secure import (
    DEFAULT_SCALE,
    SecAggError,
    SecAggPartner,
    check_masked,
    check_strategy_compatible,
    decode,
    encode,
    requires_individual_updates,
    secure_fedavg,
    shamir,
    unmask_vector,
)
from molfed.federated.secure.fixedpoint import layout_of
from molfed.federated.secure.masks import pairwise_mask, self_mask
from molfed.federated.signing import generate_keypair, load_private_key
from molfed.federated.strategies import STRATEGIES

RUN = "run-1"


def _weights(seed: int, size: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(2, size // 2)).astype(np.float32), "b": rng.normal(size=(1,)).astype(np.float32)}


def _setup(names, *, threshold, run_id=RUN, server_round=1, **kwargs):
    partners = {
        n: SecAggPartner(n, run_id=run_id, server_round=server_round, threshold=threshold, **kwargs) for n in names
    }
    roster = {n: p.advertise() for n, p in partners.items()}
    return partners, roster


def _exchange(partners, roster, *, skip=()):
    """Steps 2 and 3's delivery: each partner's inbox of shares (partners in ``skip`` never shared)."""
    sent = [s for n, p in partners.items() if n not in skip for s in p.share_keys(roster)]
    return {n: [s for s in sent if s.recipient == n] for n in partners}


def _round(updates, *, threshold=None, drop_before_share=(), drop_before_mask=(), drop_before_reveal=()):
    """One full round; returns (masked, reveals, roster) for the coordinator."""
    threshold = threshold or secure.default_threshold(len(updates))
    partners, roster = _setup(updates, threshold=threshold)
    inbox = _exchange(partners, roster, skip=drop_before_share)
    masked = [
        partners[n].mask(w, k, inbox[n])
        for n, (w, k) in updates.items()
        if n not in (*drop_before_share, *drop_before_mask)
    ]
    survivors = [m.partner for m in masked]
    reveals = [partners[n].reveal(survivors) for n in survivors if n not in drop_before_reveal]
    return masked, reveals, roster


def _fedavg(masked, reveals, roster, template, threshold):
    return secure_fedavg(masked, reveals, roster, template=template, run_id=RUN, server_round=1, threshold=threshold)


def test_secure_fedavg_of_hand_computed_example_is_exact():
    a = {"w": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32), "b": np.array([1.0], np.float32)}
    b = {"w": np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]], np.float32), "b": np.array([5.0], np.float32)}
    masked, reveals, roster = _round({"a": (a, 1), "b": (b, 3)}, threshold=2)
    out = _fedavg(masked, reveals, roster, a, 2)
    # (1*a + 3*b) / 4, by hand; every value is a multiple of 2^-16, so fixed point is exact
    np.testing.assert_array_equal(out["w"], np.array([[2.5, 2.0, 1.5], [1.0, 2.0, 3.0]], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([4.0], np.float32))
    assert out["w"].dtype == np.float32


def test_secure_fedavg_equals_plain_fedavg_within_the_fixed_point_bound():
    counts = {"a": 17, "b": 230, "c": 5, "d": 64}
    updates = {n: (_weights(i, 400), k) for i, (n, k) in enumerate(counts.items())}
    masked, reveals, roster = _round(updates)
    out = _fedavg(masked, reveals, roster, updates["a"][0], 3)
    ref = fedavg(list(updates.values()))
    # each partner rounds each coordinate by <= 1/2 unit: |error| <= K / (2 scale N), plus float32 rounding
    bound = len(counts) / (2 * DEFAULT_SCALE * sum(counts.values()))
    for name in ref:
        assert np.abs(out[name] - ref[name]).max() <= bound + 1e-7 * np.abs(ref[name]).max()


@pytest.mark.parametrize("n_partners", [3, 5])
def test_masks_cancel_exactly_in_the_ring(n_partners):
    updates = {f"p{i}": (_weights(i, 50), 10 + i) for i in range(n_partners)}
    masked, reveals, roster = _round(updates)
    total = unmask_vector(masked, reveals, roster, run_id=RUN, server_round=1, threshold=n_partners // 2 + 1)
    expected = np.zeros_like(total)
    for w, k in updates.values():
        expected += encode(w, k, scale=DEFAULT_SCALE, max_partners=n_partners)
    np.testing.assert_array_equal(total, expected)
    # and the sum of the masked vectors alone is not the sum (the self masks remain until unmasked)
    assert not np.array_equal(sum(m.vector for m in masked), expected)


def _looks_unrelated(values: np.ndarray, vector: np.ndarray) -> tuple[float, float]:
    """(Pearson r of the values with the vector read as int64, chi-square of the vector's top byte over 256 bins)."""
    r = float(np.corrcoef(values, vector.view(np.int64).astype(np.float64))[0, 1])
    counts = np.bincount((vector >> np.uint64(56)).astype(np.int64), minlength=256)
    expected = vector.size / 256
    return r, float(((counts - expected) ** 2 / expected).sum())


def test_a_masked_update_is_statistically_unrelated_to_the_update():
    rng = np.random.default_rng(0)
    true = {"w": (rng.normal(size=10_000) + np.linspace(-3, 3, 10_000)).astype(np.float32)}
    updates = {"a": (true, 50), "b": ({"w": rng.normal(size=10_000).astype(np.float32)}, 70), "c": (true, 9)}
    masked, _, _ = _round(updates)
    values = true["w"].astype(np.float64)
    r, chi2 = _looks_unrelated(values, masked[0].vector[:-1])
    # |r| of independent vectors ~ N(0, 0.01): 0.05 is 5 sigma; chi-square with 255 dof: mean 255, sd 22.6
    assert abs(r) < 0.05
    assert chi2 < 400
    # the same statistics expose the unmasked encoding (so this test can fail)
    r_plain, chi2_plain = _looks_unrelated(values, encode(true, 50, scale=DEFAULT_SCALE, max_partners=3)[:-1])
    assert r_plain > 0.99 and chi2_plain > 10_000


def test_masks_are_bound_to_run_and_round():
    mine, peer = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    peer_public = peer.public_key().public_bytes_raw()

    def mask(run_id, server_round):
        return pairwise_mask(mine, peer_public, me="a", peer="b", run_id=run_id, server_round=server_round, length=64)

    np.testing.assert_array_equal(mask("r", 1), mask("r", 1))
    assert not np.array_equal(mask("r", 1), mask("r", 2))
    assert not np.array_equal(mask("r", 1), mask("other", 1))
    # the peer derives the same stream with the opposite sign
    mine_public = mine.public_key().public_bytes_raw()
    theirs = pairwise_mask(peer, mine_public, me="b", peer="a", run_id="r", server_round=1, length=64)
    np.testing.assert_array_equal(mask("r", 1) + theirs, np.zeros(64, np.uint64))
    seed = bytes(32)
    assert not np.array_equal(
        self_mask(seed, partner="a", run_id="r", server_round=1, length=8),
        self_mask(seed, partner="a", run_id="r", server_round=2, length=8),
    )


def test_masked_update_replayed_into_another_round_is_screened_out():
    updates = {n: (_weights(i), 3) for i, n in enumerate("abc")}
    masked, reveals, roster = _round(updates)
    template = updates["a"][0]
    assert check_masked(masked[0], template=template, run_id=RUN, server_round=1) is None
    assert "round 1, expected 'run-1' round 2" in check_masked(masked[0], template=template, run_id=RUN, server_round=2)
    assert "expected 'other'" in check_masked(masked[0], template=template, run_id="other", server_round=1)
    with pytest.raises(SecAggError, match="not for run 'run-1' round 2"):
        unmask_vector(masked, reveals, roster, run_id=RUN, server_round=2, threshold=2)
    other_shapes = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(1, np.float32)}
    assert "names or shapes" in check_masked(masked[0], template=other_shapes, run_id=RUN, server_round=1)


def test_partner_that_shared_keys_then_dropped_before_masking_does_not_break_the_round():
    updates = {n: (_weights(i), 10 * (i + 1)) for i, n in enumerate("abcde")}
    masked, reveals, roster = _round(updates, drop_before_mask=("b", "d"))
    assert [m.partner for m in masked] == ["a", "c", "e"]
    assert all(set(r.mask_key_shares) == {"b", "d"} for r in reveals)
    out = _fedavg(masked, reveals, roster, updates["a"][0], 3)
    ref = fedavg([updates[n] for n in "ace"])
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5)


def test_partner_that_masked_then_dropped_is_still_counted():
    updates = {n: (_weights(i), 10 * (i + 1)) for i, n in enumerate("abcde")}
    masked, reveals, roster = _round(updates, drop_before_reveal=("a", "e"))
    assert [r.partner for r in reveals] == ["b", "c", "d"]
    out = _fedavg(masked, reveals, roster, updates["a"][0], 3)
    ref = fedavg(list(updates.values()))
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5)


def test_partner_that_never_shared_keys_is_simply_not_a_peer():
    updates = {n: (_weights(i), 4) for i, n in enumerate("abcd")}
    masked, reveals, roster = _round(updates, drop_before_share=("c",))
    assert masked[0].peers == ("a", "b", "d")
    out = _fedavg(masked, reveals, roster, updates["a"][0], 3)
    ref = fedavg([updates[n] for n in "abd"])
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5)


def test_too_many_dropouts_stop_the_round_with_a_clear_error():
    updates = {n: (_weights(i), 4) for i, n in enumerate("abcde")}
    masked, reveals, roster = _round(updates, drop_before_reveal=("a", "b", "c"))
    with pytest.raises(SecAggError, match="2 of 5 surviving partners revealed shares; threshold is 3"):
        unmask_vector(masked, reveals, roster, run_id=RUN, server_round=1, threshold=3)
    partners, roster = _setup("abc", threshold=3)
    inbox = _exchange(partners, roster, skip=("c",))
    with pytest.raises(SecAggError, match="only 2 partner.s. shared keys, threshold is 3"):
        partners["a"].mask(_weights(0), 4, inbox["a"])


def test_partner_reveals_once_and_never_for_a_set_below_threshold_or_without_itself():
    partners, roster = _setup("abcd", threshold=3)
    inbox = _exchange(partners, roster)
    a = partners["a"]
    a.mask(_weights(0), 4, inbox["a"])
    with pytest.raises(SecAggError, match="refusing to reveal"):
        a.reveal(["a", "b"])  # below threshold: the "sum" would isolate two updates
    with pytest.raises(SecAggError, match="refusing to reveal"):
        a.reveal(["b", "c", "d"])
    reveal = a.reveal(["a", "b", "c"])
    assert set(reveal.self_mask_shares) == {"a", "b", "c"} and set(reveal.mask_key_shares) == {"d"}
    # a second request (e.g. claiming 'c' dropped too) would hand out both kinds of share for 'c': refused
    with pytest.raises(SecAggError, match="once per round"):
        a.reveal(["a", "b", "d"])


def test_tampered_share_and_altered_roster_are_refused():
    partners, roster = _setup("abc", threshold=2)
    inbox = _exchange(partners, roster)
    share = inbox["a"][0]
    forged = type(share)(share.sender, share.recipient, share.ciphertext[:-1] + bytes([share.ciphertext[-1] ^ 1]))
    with pytest.raises(SecAggError, match="failed authentication"):
        partners["a"].mask(_weights(0), 4, [forged, *inbox["a"][1:]])
    partners, roster = _setup("abc", threshold=2)
    inbox = _exchange(partners, roster)
    for_b = inbox["b"][0]
    assert for_b.sender == "a"
    with pytest.raises(SecAggError, match="got a share from"):
        partners["c"].mask(_weights(0), 4, [for_b])
    readdressed = type(for_b)(for_b.sender, "c", for_b.ciphertext)
    with pytest.raises(SecAggError, match="failed authentication"):  # the recipient is bound into the ciphertext
        partners["c"].mask(_weights(0), 4, [readdressed])
    partners, roster = _setup("abc", threshold=2)
    with pytest.raises(SecAggError, match="lacks or alters"):
        partners["a"].share_keys({**roster, "a": roster["b"]})


def test_signed_round_keys_stop_a_coordinator_from_substituting_keys():
    pems, publics = {}, {}
    for n in "abc":
        pems[n], publics[n] = generate_keypair()

    def setup():
        return {
            n: SecAggPartner(
                n, run_id=RUN, server_round=1, threshold=2, signing_key=load_private_key(pems[n]), peer_keys=publics
            )
            for n in "abc"
        }

    partners = setup()
    roster = {n: p.advertise() for n, p in partners.items()}
    inbox = _exchange(partners, roster)  # genuine signed keys are accepted
    masked = [partners[n].mask(_weights(i), 2, inbox[n]) for i, n in enumerate("abc")]
    reveals = [partners[n].reveal("abc") for n in "abc"]
    assert _fedavg(masked, reveals, roster, _weights(0), 2)["w"].shape == (2, 3)

    partners = setup()
    roster = {n: p.advertise() for n, p in partners.items()}
    impostor = SecAggPartner("b", run_id=RUN, server_round=1, threshold=2).advertise()  # coordinator's own keys
    with pytest.raises(SecAggError, match="round keys of 'b' are not signed by its key"):
        partners["a"].share_keys({**roster, "b": impostor})


def test_corrupted_revealed_share_is_detected():
    updates = {n: (_weights(i), 4) for i, n in enumerate("abcde")}
    masked, reveals, roster = _round(updates, drop_before_mask=("e",))
    bad = reveals[0]
    corrupted = type(bad)(
        bad.partner, bad.run_id, bad.server_round, bad.self_mask_shares, {"e": bad.mask_key_shares["e"] + 1}
    )
    with pytest.raises(SecAggError, match="cannot recover the mask key of 'e'"):
        unmask_vector(masked, [corrupted, *reveals[1:]], roster, run_id=RUN, server_round=1, threshold=3)
    # consistent shares of some other key (e.g. colluding revealers) are caught by the advertised public key
    points = {"a": 1, "b": 2, "c": 3, "d": 4}
    other = shamir.split(X25519PrivateKey.generate().private_bytes_raw(), list(points.values()), 3)
    swapped = [
        type(r)(r.partner, r.run_id, r.server_round, r.self_mask_shares, {"e": other[points[r.partner]]})
        for r in reveals
    ]
    with pytest.raises(SecAggError, match="recovered mask key of 'e' does not match its advertised key"):
        unmask_vector(masked, swapped, roster, run_id=RUN, server_round=1, threshold=3)


def test_overflow_guard_and_non_finite_values():
    huge = {"w": np.array([1e9], np.float32)}
    with pytest.raises(ValueError, match=r"tensor 'w': .* would overflow the ring Z_2\^64 summed over 5 partners"):
        encode(huge, 100_000, scale=DEFAULT_SCALE, max_partners=5)
    encode(huge, 1, scale=DEFAULT_SCALE, max_partners=5)  # 1e9 * 2^16 = 6.6e13 fits
    with pytest.raises(ValueError, match="contains NaN"):
        encode({"w": np.array([np.nan], np.float32)}, 1, scale=DEFAULT_SCALE, max_partners=2)
    partners, roster = _setup("ab", threshold=2)
    inbox = _exchange(partners, roster)
    with pytest.raises(ValueError, match="would overflow"):
        partners["a"].mask(huge, 10**8, inbox["a"])


def test_fixed_point_round_trip_of_negative_values():
    w = {"x": np.array([[-1.5, 0.25], [3.0, -0.0001]], np.float32)}
    total, n = decode(encode(w, 3, scale=2**16, max_partners=1), layout_of(w), scale=2**16)
    assert n == 3
    np.testing.assert_allclose(total["x"], 3 * w["x"].astype(np.float64), atol=0.5 / 2**16)


def test_shamir_any_threshold_shares_recover_and_inconsistency_is_detected():
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 4, 5], 3)
    assert shamir.combine({x: shares[x] for x in (2, 4, 5)}, 3) == secret
    assert shamir.combine(shares, 3) == secret
    with pytest.raises(ValueError, match="got 2 shares, expected at least 3"):
        shamir.combine({1: shares[1], 2: shares[2]}, 3)
    with pytest.raises(ValueError, match="inconsistent"):
        shamir.combine({**shares, 5: shares[5] + 1}, 3)


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum", "multikrum", "qfedavg", "scaffold"])
def test_strategies_needing_individual_updates_are_refused(name):
    assert requires_individual_updates(name)
    with pytest.raises(ValueError, match=rf"strategy '{name}' needs individual updates .*choose from \['fedadagrad'"):
        check_strategy_compatible(name, secure_aggregation=True)
    check_strategy_compatible(name, secure_aggregation=False)


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad"])
def test_sum_only_strategies_are_allowed(name):
    assert not requires_individual_updates(name)
    check_strategy_compatible(name, secure_aggregation=True)


def test_every_registered_strategy_is_classified_and_unknown_names_are_errors():
    for name in STRATEGIES:
        requires_individual_updates(name)
    with pytest.raises(ValueError, match=r"unknown strategy 'fedavgg'; choose from \["):
        requires_individual_updates("fedavgg")
