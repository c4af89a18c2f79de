"""Per-strategy arithmetic on hand-computed 2x3 arrays."""

import numpy as np
import pytest

from molfed.federated import aggregate as agg
from molfed.federated.strategies import build_strategy
from molfed.federated.types import LOSS_BEFORE, SCAFFOLD_C, SCAFFOLD_DELTA_C, Failure, Update


def _full(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, np.float32)}


def _u(partner: str, weights, n: int = 1, **metrics: float) -> Update:
    return Update(partner, weights, n, metrics)


def test_coordinate_median_of_three():
    a = {"w": np.array([[1, 5, 3], [0, 0, 0]], np.float32)}
    b = {"w": np.array([[2, 0, 9], [1, -1, 2]], np.float32)}
    c = {"w": np.array([[7, 4, 4], [5, 8, -3]], np.float32)}
    out = build_strategy("fedmedian").run_round(1, _full(0), [_u("a", a, 10), _u("b", b), _u("c", c)]).weights
    np.testing.assert_array_equal(out["w"], np.array([[2, 4, 4], [1, 0, 0]], np.float32))


def test_trimmed_mean_drops_the_extremes_per_coordinate():
    values = [0.0, 1.0, 2.0, 3.0, 100.0]  # beta 0.2 of 5 -> drop one low, one high per coordinate
    updates = [_u(f"p{i}", _full(v)) for i, v in enumerate(values)]
    updates[0] = _u("p0", {"w": np.array([[0, 0, 0], [50, 50, 50]], np.float32)})  # a high value in row 2
    out = build_strategy("fedtrimmedavg", beta=0.2).run_round(1, _full(0), updates).weights
    # row 1: mean(1, 2, 3) = 2; row 2: values 50, 1, 2, 3, 100 -> mean(2, 3, 50) = 55 / 3
    np.testing.assert_allclose(out["w"], np.array([[2, 2, 2], [55 / 3] * 3], np.float32))
    with pytest.raises(ValueError, match="expected 0 <= beta < 0.5"):
        agg.trimmed_mean([_full(0)], 0.5)


def test_krum_picks_from_the_honest_cluster_and_multikrum_drops_the_outlier():
    values = {"h1": 1.0, "h2": 1.1, "h3": 0.9, "h4": 1.05, "evil": 100.0}
    updates = [_u(p, _full(v)) for p, v in values.items()]
    # f = 1, 5 updates -> 2 nearest neighbours; per-coordinate squared distances give scores
    # h1: .0025+.01, h2: .0025+.01, h3: .01+.0225, h4: .0025+.0025 (lowest), evil: huge
    krum = build_strategy("krum", byzantine=1).run_round(1, _full(0), updates).weights
    np.testing.assert_array_equal(krum["w"], _full(1.05)["w"])
    multi = build_strategy("multikrum", byzantine=1).run_round(1, _full(0), updates).weights  # m = 5 - 1
    np.testing.assert_allclose(multi["w"], _full((1.0 + 1.1 + 0.9 + 1.05) / 4)["w"], rtol=1e-6)
    scores = agg.krum_scores([u.weights for u in updates], byzantine=1)
    np.testing.assert_allclose(scores[:4], 6 * np.array([0.0125, 0.0125, 0.0325, 0.005]), rtol=1e-5)


def test_fedadam_yogi_adagrad_first_step_by_hand():
    current = _full(0.0)
    updates = [_u("a", _full(1.0), 1), _u("b", _full(3.0), 1)]  # average 2 -> step 2
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 0.01
    options = {"server_lr": lr, "beta_1": b1, "beta_2": b2, "tau": tau}
    m = (1 - b1) * 2.0
    expected = {
        "fedadam": lr * m / (np.sqrt(b2 * tau**2 + (1 - b2) * 4.0) + tau),
        "fedyogi": lr * m / (np.sqrt(tau**2 + (1 - b2) * 4.0) + tau),  # sign(tau^2 - 4) = -1
        "fedadagrad": lr * m / (np.sqrt(tau**2 + 4.0) + tau),
    }
    for name, value in expected.items():
        strategy = build_strategy(name, **options)
        out = strategy.run_round(1, current, updates).weights
        np.testing.assert_allclose(out["w"], _full(value)["w"], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(strategy.state_dict()["m"]["w"], np.full((2, 3), m))


def test_fedavgm_accumulates_momentum():
    strategy = build_strategy("fedavgm", server_lr=1.0, momentum=0.5)
    x1 = strategy.run_round(1, _full(0.0), [_u("a", _full(2.0))]).weights  # v = 2, x = 2
    x2 = strategy.run_round(2, x1, [_u("a", _full(3.0))]).weights  # v = 0.5 * 2 + 1 = 2, x = 4
    np.testing.assert_array_equal(x1["w"], _full(2.0)["w"])
    np.testing.assert_array_equal(x2["w"], _full(4.0)["w"])


def test_qfedavg_with_q0_is_the_unweighted_mean_of_local_models():
    updates = [_u("a", _full(1.0), 1, **{LOSS_BEFORE: 5.0}), _u("b", _full(4.0), 9, **{LOSS_BEFORE: 0.1})]
    out = build_strategy("qfedavg", q=0.0, lipschitz=7.0).run_round(1, _full(-2.0), updates).weights
    np.testing.assert_allclose(out["w"], _full(2.5)["w"], rtol=1e-6)


def test_qfedavg_weighs_the_worse_partner_more():
    # x = 0; w_a = 1 (F=2), w_b = 3 (F=1); q = 1, L = 1, one coordinate:
    # dw = -1, -3; D = F dw = -2, -3; h = q ||dw||^2 + L F = 1 + 2, 9 + 1 -> x = 5 / 13
    updates = [
        _u("a", {"w": np.array([1.0], np.float32)}, 1, **{LOSS_BEFORE: 2.0}),
        _u("b", {"w": np.array([3.0], np.float32)}, 1, **{LOSS_BEFORE: 1.0}),
    ]
    out = build_strategy("qfedavg", q=1.0, lipschitz=1.0).run_round(1, {"w": np.zeros(1, np.float32)}, updates)
    np.testing.assert_allclose(out.weights["w"], [5 / 13], rtol=1e-6)


def test_scaffold_moves_c_by_participation_times_mean_delta():
    strategy = build_strategy("scaffold")
    assert np.array_equal(strategy.fit_tensors(1, _full(7.0))[SCAFFOLD_C]["w"], np.zeros((2, 3), np.float32))
    updates = [
        Update("a", _full(1.0), 1, {}, {SCAFFOLD_DELTA_C: _full(1.0)}),
        Update("b", _full(3.0), 3, {}, {SCAFFOLD_DELTA_C: _full(3.0)}),
    ]
    failures = [Failure("c", "timed out"), Failure("d", "timed out")]
    out = strategy.run_round(1, _full(0.0), updates, failures).weights
    np.testing.assert_array_equal(out["w"], _full(2.5)["w"])  # sample-weighted: (1 + 9) / 4
    # |S| / N = 2 / 4; mean delta = 2 -> c = 1
    np.testing.assert_array_equal(strategy.fit_tensors(2, out)[SCAFFOLD_C]["w"], _full(1.0)["w"])


def test_adaptive_step_rejects_unknown_rule():
    with pytest.raises(ValueError, match="got rule 'rmsprop'"):
        agg.adaptive_step(_full(0), _full(1), None, None, rule="rmsprop", server_lr=1, beta_1=0, beta_2=0, tau=1)
