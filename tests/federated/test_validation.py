"""Update validation by delta: absolute and relative norm bounds, direction check, reuse of the shared guard."""

import numpy as np
import pytest

from molfed.federated.types import Update
from molfed.federated.validation import delta_vector, validate_update_deltas

rng = np.random.default_rng(0)
CURRENT = {"w": rng.normal(size=(20, 10)).astype(np.float32), "b": rng.normal(size=(10,)).astype(np.float32)}
DIRECTION = {k: rng.normal(size=v.shape) for k, v in CURRENT.items()}  # what honest partners roughly agree on


def _honest(name: str, seed: int) -> Update:
    noise = np.random.default_rng(seed)
    weights = {
        k: (CURRENT[k] + 0.1 * DIRECTION[k] + 0.03 * noise.normal(size=v.shape)).astype(np.float32)
        for k, v in CURRENT.items()
    }
    return Update(name, weights, 10)


def _transform(update: Update, name: str, factor: float) -> Update:
    """An update whose delta is ``factor`` times ``update``'s."""
    weights = {k: (CURRENT[k] + factor * (update.weights[k] - CURRENT[k])).astype(np.float32) for k in CURRENT}
    return Update(name, weights, update.n_samples)


def _round(*extra: Update) -> list[Update]:
    return [_honest(f"h{i}", i) for i in range(4)] + list(extra)


def _outcome(updates, **bounds):
    result = validate_update_deltas(CURRENT, updates, **bounds)
    return [u.partner for u in result.accepted], {f.partner: f.reason for f in result.rejected}


def test_honest_round_passes_every_check():
    accepted, rejected = _outcome(_round(), max_delta_norm=5.0, max_norm_ratio=3.0, min_cosine=0.5)
    assert accepted == ["h0", "h1", "h2", "h3"] and rejected == {}


def test_scaled_update_is_rejected_by_the_absolute_bound():
    scaled = _transform(_honest("x", 9), "scaled", 100.0)
    accepted, rejected = _outcome(_round(scaled), max_delta_norm=5.0)
    assert accepted == ["h0", "h1", "h2", "h3"]
    assert rejected["scaled"].startswith("update rejected: delta L2 norm ")
    assert "exceeds the bound 5" in rejected["scaled"]


def test_scaled_update_is_rejected_by_the_relative_bound():
    scaled = _transform(_honest("x", 9), "scaled", 100.0)
    accepted, rejected = _outcome(_round(scaled), max_norm_ratio=5.0)
    assert accepted == ["h0", "h1", "h2", "h3"]
    assert "x this round's median" in rejected["scaled"] and "(limit 5x)" in rejected["scaled"]


def test_sign_flipped_update_passes_norm_bounds_but_not_the_direction_check():
    flipped = _transform(_honest("x", 9), "flipped", -1.0)
    updates = _round(flipped)
    # same norm as an honest update: norm bounds cannot see it
    assert _outcome(updates, max_delta_norm=5.0, max_norm_ratio=3.0)[1] == {}
    accepted, rejected = _outcome(updates, min_cosine=0.0)
    assert accepted == ["h0", "h1", "h2", "h3"]
    assert rejected["flipped"].startswith("update rejected: delta points away from this round's median delta")


def test_nan_update_is_rejected_by_the_shared_guard_and_others_still_checked():
    poisoned = _honest("nan", 9)
    poisoned.weights["w"][3, 3] = np.nan
    scaled = _transform(_honest("x", 8), "scaled", 100.0)
    result = validate_update_deltas(CURRENT, _round(poisoned, scaled), max_norm_ratio=5.0)
    reasons = {f.partner: f.reason for f in result.rejected}
    assert reasons["nan"] == "update rejected: tensor 'w': contains NaN or infinite values"
    assert "median" in reasons["scaled"]
    assert [f.partner for f in result.rejected] == ["nan", "scaled"]  # input order
    assert "nan" not in result.delta_norms and set(result.delta_norms) == {"h0", "h1", "h2", "h3", "scaled"}


def test_relative_and_direction_checks_need_enough_updates():
    pair = [_honest("h0", 0), _transform(_honest("x", 9), "flipped", -1.0)]
    assert _outcome(pair, max_norm_ratio=1.01, min_cosine=0.0)[1] == {}
    # a third update makes a majority to compare against
    assert list(_outcome([*pair, _honest("h1", 1)], min_cosine=0.0)[1]) == ["flipped"]


def test_delta_norms_are_reported():
    update = _transform(_honest("x", 1), "x", 1.0)
    result = validate_update_deltas(CURRENT, [update])
    assert result.delta_norms["x"] == pytest.approx(np.linalg.norm(delta_vector(CURRENT, update.weights)))
    zero = Update("same", CURRENT, 1)
    assert validate_update_deltas(CURRENT, [zero]).delta_norms == {"same": 0.0}


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"max_delta_norm": 0.0}, "got max_delta_norm=0.0, expected > 0"),
        ({"max_norm_ratio": -1.0}, "got max_norm_ratio=-1.0, expected > 0"),
        ({"min_cosine": 1.5}, r"got min_cosine=1.5, expected within \[-1, 1\]"),
        ({"min_reference": 1}, "got min_reference=1, expected >= 2"),
    ],
)
def test_bad_bounds_raise(bounds, message):
    with pytest.raises(ValueError, match=message):
        validate_update_deltas(CURRENT, [], **bounds)
