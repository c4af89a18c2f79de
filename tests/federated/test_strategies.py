"""Contract tests, parametrized over every registered strategy."""

import re

import numpy as np
import pytest

from molfed.federated.capabilities import strategy_names
from molfed.federated.strategies import STRATEGIES, build_strategy, validate_updates
from molfed.federated.types import LOSS_BEFORE, SCAFFOLD_DELTA_C, Failure, QuorumError, Update

ALL = sorted(STRATEGIES)

#: Strategies whose aggregate is *not* "the (weighted) average" even when all partners agree, and why.
NOT_AN_AVERAGE = {
    "fedadam": "server optimizer: first step is server_lr * m / (sqrt(v) + tau), not the partners' average",
    "fedyogi": "server optimizer: first step is server_lr * m / (sqrt(v) + tau), not the partners' average",
    "fedadagrad": "server optimizer: first step is server_lr * m / (sqrt(v) + tau), not the partners' average",
    "qfedavg": "q > 0: the step is damped by q F^(q-1) L ||dw||^2 in the denominator",
}
#: Strategies that weight partners by n_samples (hand-computed expectation below); options for an exact average.
WEIGHTED = {"fedavg": {}, "fedprox": {}, "fedavgm": {}, "scaffold": {}, "multikrum": {"byzantine": 0, "selected": 2}}
#: Strategies that by design ignore n_samples.
UNWEIGHTED = ["fedmedian", "fedtrimmedavg", "krum", "qfedavg"]


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(2, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}


def _update(partner: str, weights, n: int, loss: float = 1.0, delta_c=None) -> Update:
    """An update carrying what every strategy may need (q-FedAvg's loss, SCAFFOLD's control delta)."""
    delta_c = delta_c if delta_c is not None else {k: np.zeros_like(v) for k, v in weights.items()}
    return Update(partner, weights, n, {LOSS_BEFORE: loss}, {SCAFFOLD_DELTA_C: delta_c})


def test_config_lists_exactly_the_registered_strategies():
    assert list(strategy_names()) == ALL


def test_every_implementation_declares_its_capabilities_and_the_user_guide_shows_them():
    from pathlib import Path

    from molfed.federated.capabilities import capability_table
    from molfed.federated.strategy_base import StrategyCaps

    assert all(isinstance(STRATEGIES[n].__dict__.get("caps", STRATEGIES[n].caps), StrategyCaps) for n in ALL)
    guide = (Path(__file__).resolve().parents[2] / "docs" / "user-guide.md").read_text()
    assert capability_table() in guide, "docs/user-guide.md's strategy table is stale: paste capability_table() output"


def test_unknown_strategy_lists_choices():
    with pytest.raises(
        ValueError, match=r"unknown strategy 'fedavgg'; choose from \['fedadagrad', 'fedadam', 'fedavg'"
    ):
        build_strategy("fedavgg")


@pytest.mark.parametrize("name", ALL)
def test_unknown_option_names_the_valid_ones(name):
    valid = sorted(STRATEGIES[name].defaults)
    with pytest.raises(ValueError, match=re.escape(f"unknown option(s) ['bogus']; valid options: {valid}")):
        build_strategy(name, bogus=1.0)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("fedprox", {"proximal_mu": -1.0}, "option 'proximal_mu': got -1, expected >= 0"),
        ("fedtrimmedavg", {"beta": 0.5}, "option 'beta': got 0.5, expected 0 <= beta < 0.5"),
        ("krum", {"byzantine": 1.5}, "option 'byzantine': got 1.5, expected a whole number >= 0"),
        ("fedadam", {"tau": 0.0}, "option 'tau': got 0, expected > 0"),
        ("fedavgm", {"momentum": "high"}, "option 'momentum': got 'high', expected a finite number"),
        ("qfedavg", {"q": float("nan")}, "option 'q': got nan, expected a finite number"),
    ],
)
def test_invalid_option_values_are_rejected(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_strategy(name, **options)


@pytest.mark.parametrize("name", ALL)
def test_updates_equal_to_current_come_back_unchanged(name):
    w = _weights(0)
    updates = [_update(p, w, n) for p, n in (("x", 3), ("y", 5), ("z", 1))]
    out = build_strategy(name).run_round(1, w, updates).weights
    for key in w:
        np.testing.assert_allclose(out[key], w[key], rtol=1e-6, atol=1e-7)
        assert out[key].dtype == np.float32


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_AN_AVERAGE[n])) if n in NOT_AN_AVERAGE else n
        for n in ALL
    ],
)
def test_identical_updates_replace_the_current_weights(name):
    current, agreed = _weights(0), _weights(1)
    updates = [_update(p, agreed, n, loss=0.5) for p, n in (("x", 3), ("y", 5), ("z", 1))]
    out = build_strategy(name).run_round(1, current, updates).weights
    for key in agreed:
        np.testing.assert_allclose(out[key], agreed[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_permutation_invariant(name):
    current = _weights(9)
    updates = [
        _update(f"p{i}", _weights(i), n, loss=0.5 + i, delta_c=_weights(20 + i)) for i, n in enumerate((3, 5, 1, 7))
    ]
    a_strategy, b_strategy = build_strategy(name), build_strategy(name)
    for r in (1, 2):  # the second round exercises server state (momentum, moments, control variate)
        a = a_strategy.run_round(r, current, updates).weights
        b = b_strategy.run_round(r, current, list(reversed(updates))).weights
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


_A = {"w": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32), "b": np.array([1.0], np.float32)}
_B = {"w": np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]], np.float32), "b": np.array([5.0], np.float32)}


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weights_by_sample_count_exactly(name):
    current = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(1, np.float32)}
    out = build_strategy(name, **WEIGHTED[name]).run_round(1, current, [_update("a", _A, 1), _update("b", _B, 3)])
    # (1*A + 3*B) / 4, by hand
    np.testing.assert_array_equal(out.weights["w"], np.array([[2.5, 2.0, 1.5], [1.0, 2.0, 3.0]], np.float32))
    np.testing.assert_array_equal(out.weights["b"], np.array([4.0], np.float32))


@pytest.mark.parametrize("name", UNWEIGHTED)
def test_unweighted_strategies_ignore_sample_counts(name):
    current = _weights(9)
    updates = [_update(f"p{i}", _weights(i), 1, loss=0.5 + i) for i in range(5)]
    skewed = [
        _update(u.partner, u.weights, n, loss=u.metrics[LOSS_BEFORE])
        for u, n in zip(updates, (1, 50, 2, 9, 3), strict=True)
    ]
    a = build_strategy(name).run_round(1, current, updates).weights
    b = build_strategy(name).run_round(1, current, skewed).weights
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_every_registered_strategy_is_classified_for_the_average_contracts():
    assert set(WEIGHTED) | set(UNWEIGHTED) | set(NOT_AN_AVERAGE) == set(ALL)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", ALL)
def test_non_finite_updates_are_rejected_not_averaged(name, bad):
    current = _weights(0)
    poisoned = {k: v.copy() for k, v in _weights(1).items()}
    poisoned["a"][0, 0] = bad
    updates = [_update("good", _weights(2), 4), _update("evil", poisoned, 4)]
    outcome = build_strategy(name).run_round(1, current, updates, min_partners=1)
    assert outcome.accepted == ("good",)
    assert [f.partner for f in outcome.failures] == ["evil"]
    assert "NaN or infinite" in outcome.failures[0].reason
    assert all(np.isfinite(v).all() for v in outcome.weights.values())


def test_non_finite_control_delta_is_rejected_by_scaffold():
    current = _weights(0)
    bad = _weights(3)
    bad["b"][1] = np.nan
    outcome = build_strategy("scaffold").run_round(
        1, current, [_update("good", _weights(2), 4), _update("evil", _weights(1), 4, delta_c=bad)]
    )
    assert outcome.accepted == ("good",)
    assert (
        outcome.failures[0].reason
        == "update rejected: tensors 'scaffold_delta_c': tensor 'b': contains NaN or infinite values"
    )


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [({}, "metric 'loss_before' missing"), ({LOSS_BEFORE: float("nan")}, "got nan"), ({LOSS_BEFORE: -1.0}, "got -1.0")],
)
def test_qfedavg_rejects_updates_without_a_usable_loss(metrics, reason):
    current = _weights(0)
    updates = [_update("good", _weights(2), 4), Update("evil", _weights(1), 4, metrics)]
    outcome = build_strategy("qfedavg").run_round(1, current, updates)
    assert outcome.accepted == ("good",)
    assert reason in outcome.failures[0].reason


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


@pytest.mark.parametrize("name", ALL)
def test_below_quorum_raises_naming_failed_partners(name):
    current = _weights(0)
    with pytest.raises(QuorumError, match=r"1 usable update\(s\), quorum is 2 \(beta: timed out\)"):
        build_strategy(name).run_round(
            1, current, [_update("alpha", current, 2)], [Failure("beta", "timed out")], min_partners=2
        )
    with pytest.raises(QuorumError, match="no partner reported"):
        build_strategy(name).run_round(1, current, [], min_partners=1)


@pytest.mark.parametrize("name", ALL)
def test_empty_round_keeps_weights_and_server_state(name):
    current = _weights(0)
    strategy = build_strategy(name)
    strategy.run_round(1, current, [_update("a", _weights(1), 2), _update("b", _weights(2), 3)])
    before = strategy.state_dict()
    outcome = strategy.run_round(2, current, [], [Failure("a", "timed out")], min_partners=0)
    assert outcome.accepted == () and outcome.failures == (Failure("a", "timed out"),)
    for key in current:
        np.testing.assert_array_equal(outcome.weights[key], current[key])
    _assert_same_state(strategy.state_dict(), before)


def _assert_same_state(a, b):
    assert type(a) is type(b) or (isinstance(a, float | int) and isinstance(b, float | int))
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_state(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _plain(value) -> bool:
    """Only numpy arrays, lists, scalars and string-keyed dicts of those: checkpointable without pickle."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, np.ndarray | int | float | str | bool)


@pytest.mark.parametrize("name", ALL)
def test_server_state_round_trips_and_resumes_identically(name):
    current = _weights(0)
    round1 = [_update(f"p{i}", _weights(i + 1), 2 + i, loss=1.0 + i, delta_c=_weights(10 + i)) for i in range(3)]
    round2 = [_update(f"p{i}", _weights(i + 5), 2 + i, loss=0.5 + i, delta_c=_weights(15 + i)) for i in range(3)]
    original = build_strategy(name)
    mid = original.run_round(1, current, round1).weights
    state = original.state_dict()
    assert _plain(state)
    resumed = build_strategy(name)
    resumed.load_state_dict(state)
    _assert_same_state(resumed.state_dict(), state)
    for key, tensors in original.fit_tensors(2, mid).items():
        _assert_same_state(resumed.fit_tensors(2, mid)[key], tensors)
    a = original.run_round(2, mid, round2).weights
    b = resumed.run_round(2, mid, round2).weights
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("name", ALL)
def test_unknown_state_keys_are_rejected(name):
    with pytest.raises(ValueError, match=r"unknown state key\(s\) \['bogus'\]"):
        build_strategy(name).load_state_dict({"bogus": 1})


@pytest.mark.parametrize("name", ALL)
def test_fit_hooks_are_plain_values(name):
    strategy = build_strategy(name)
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in strategy.fit_options(1).items())
    for tensors in strategy.fit_tensors(1, _weights(0)).values():
        assert {k: v.shape for k, v in tensors.items()} == {"a": (2, 3), "b": (3,)}
        assert all(v.dtype == np.float32 for v in tensors.values())
