"""Contract tests, parametrized over every registered strategy."""

import numpy as np
import pytest

from molfed.config import STRATEGY_NAMES
from molfed.federated.strategies import STRATEGIES, build_strategy, validate_updates
from molfed.federated.types import Failure, QuorumError, Update


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(2, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}


def test_config_lists_exactly_the_registered_strategies():
    assert sorted(STRATEGY_NAMES) == sorted(STRATEGIES)


def test_unknown_strategy_lists_choices():
    with pytest.raises(ValueError, match=r"unknown strategy 'fedavgg'; choose from \['fedavg'"):
        build_strategy("fedavgg")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_identical_updates_come_back_unchanged(name):
    w = _weights(0)
    updates = [Update(p, w, n) for p, n in (("x", 3), ("y", 5), ("z", 1))]
    out = build_strategy(name).run_round(1, w, updates).weights
    for key in w:
        np.testing.assert_allclose(out[key], w[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_permutation_invariant(name):
    current = _weights(9)
    updates = [Update(f"p{i}", _weights(i), n) for i, n in enumerate((3, 5, 1, 7))]
    a = build_strategy(name).run_round(1, current, updates).weights
    b = build_strategy(name).run_round(1, current, list(reversed(updates))).weights
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_non_finite_updates_are_rejected_not_averaged(name, bad):
    current = _weights(0)
    poisoned = {k: v.copy() for k, v in _weights(1).items()}
    poisoned["a"][0, 0] = bad
    updates = [Update("good", _weights(2), 4), Update("evil", poisoned, 4)]
    outcome = build_strategy(name).run_round(1, current, updates, min_partners=1)
    assert outcome.accepted == ("good",)
    assert [f.partner for f in outcome.failures] == ["evil"]
    assert "NaN or infinite" in outcome.failures[0].reason
    assert all(np.isfinite(v).all() for v in outcome.weights.values())


def test_shape_and_name_mismatches_are_rejected_with_reason():
    current = _weights(0)
    wrong_shape = {"a": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)}
    wrong_name = {"a": np.zeros((2, 3), np.float32), "c": np.zeros(3, np.float32)}
    accepted, rejected = validate_updates(
        current,
        [Update("s", wrong_shape, 1), Update("n", wrong_name, 1), Update("ok", current, 1)],
        [],
        min_partners=1,
    )
    assert [u.partner for u in accepted] == ["ok"]
    reasons = {f.partner: f.reason for f in rejected}
    assert "got shape (3, 2), expected (2, 3)" in reasons["s"]
    assert "missing ['b'], unexpected ['c']" in reasons["n"]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_below_quorum_raises_naming_failed_partners(name):
    current = _weights(0)
    with pytest.raises(QuorumError, match=r"1 usable update\(s\), quorum is 2 \(beta: timed out\)"):
        build_strategy(name).run_round(
            1, current, [Update("alpha", current, 2)], [Failure("beta", "timed out")], min_partners=2
        )
    with pytest.raises(QuorumError, match="no partner reported"):
        build_strategy(name).run_round(1, current, [], min_partners=1)
