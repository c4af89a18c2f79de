"""Client-level DP: each partner's update clipped, calibrated noise at aggregation; the strategy wrapper; config."""

import numpy as np
import pytest

from molfed.config import parse_config
from molfed.errors import ConfigError
from molfed.federated.dp_budget import wrap_strategy
from molfed.federated.dp_client import PrivateStrategy, clip_delta, noisy_mean_delta
from molfed.federated.strategies import build_strategy
from molfed.federated.types import PROXIMAL_MU, Update
from molfed.privacy import DP_MAX_GRAD_NORM, DP_NOISE_MULTIPLIER, DP_NOISE_SEED

CURRENT = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(4, dtype=np.float32)}


def _update(name, scale, n=10):
    rng = np.random.default_rng(len(name))
    return Update(name, {k: (scale * rng.normal(size=v.shape)).astype(np.float32) for k, v in CURRENT.items()}, n)


def _norm(weights):
    return float(np.sqrt(sum(float((np.asarray(a, dtype=np.float64) ** 2).sum()) for a in weights.values())))


def test_clip_delta_bounds_the_update_norm_and_keeps_small_updates():
    big, small = _update("big", 100.0), _update("small", 1e-3)
    clipped, norm = clip_delta(CURRENT, big.weights, 1.0)
    assert norm > 100 and _norm(clipped) == pytest.approx(1.0)
    kept, _ = clip_delta(CURRENT, small.weights, 1.0)
    assert all(np.allclose(kept[k], small.weights[k]) for k in CURRENT)


def test_one_partner_moves_the_noiseless_mean_by_at_most_bound_over_m():
    honest = [_update("a", 0.1), _update("b", 0.1)]
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    kwargs = dict(bound=0.5, noise_multiplier=0.0, denominator=3)
    without = noisy_mean_delta(CURRENT, honest, rng=rng(), **kwargs)
    with_attacker = noisy_mean_delta(CURRENT, [*honest, _update("evil", 1e4)], rng=rng(), **kwargs)
    moved = _norm({k: with_attacker[k] - without[k] for k in CURRENT})
    assert moved == pytest.approx(0.5 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="denominator"):
        noisy_mean_delta(CURRENT, honest, bound=1.0, noise_multiplier=1.0, denominator=1, rng=rng())


def test_client_noise_has_std_z_times_bound_over_m():
    current = {"w": np.zeros(100_000, dtype=np.float32)}
    mean = noisy_mean_delta(current, [], bound=2.0, noise_multiplier=1.5, denominator=4, rng=np.random.default_rng(1))
    assert float(mean["w"].std()) == pytest.approx(1.5 * 2.0 / 4, rel=0.02)


def test_client_mode_wraps_fedavg_and_clips_a_scaled_update():
    strategy = PrivateStrategy(
        build_strategy("fedavg"), mode="client", noise_multiplier=0.01, max_norm=1.0, noise_seed=0
    )
    updates = [_update("a", 0.01), _update("b", 0.01), _update("evil", 100.0)]
    outcome = strategy.run_round(1, CURRENT, updates, min_partners=3)
    assert _norm(outcome.weights) < 1.0  # the x100 update could not drag the model further than its bound
    again = PrivateStrategy(build_strategy("fedavg"), mode="client", noise_multiplier=0.01, max_norm=1.0, noise_seed=0)
    assert all(
        np.array_equal(outcome.weights[k], again.run_round(1, CURRENT, updates, min_partners=3).weights[k])
        for k in CURRENT
    )
    plain = build_strategy("fedavg").run_round(1, CURRENT, updates, min_partners=3)
    assert _norm(plain.weights) > 10  # without client DP the same attacker dominates


def test_sample_mode_adds_dp_fit_options_and_keeps_the_inner_strategy():
    inner = build_strategy("fedprox", proximal_mu=0.1)
    strategy = wrap_strategy(inner, mode="sample", noise_multiplier=1.3, max_grad_norm=0.7, noise_seed=None)
    assert strategy.fit_options(1) == {PROXIMAL_MU: 0.1, DP_NOISE_MULTIPLIER: 1.3, DP_MAX_GRAD_NORM: 0.7}
    seeded = wrap_strategy(inner, mode="sample", noise_multiplier=1.3, max_grad_norm=0.7, noise_seed=5)
    assert seeded.fit_options(1)[DP_NOISE_SEED] == 5.0
    assert wrap_strategy(inner, mode="off", noise_multiplier=1, max_grad_norm=1, noise_seed=None) is inner
    updates = [_update("a", 1.0, 10), _update("b", 1.0, 30)]
    same = inner.run_round(1, CURRENT, updates).weights
    assert all(np.array_equal(same[k], strategy.run_round(1, CURRENT, updates).weights[k]) for k in CURRENT)


@pytest.mark.parametrize(("mode", "strategy"), [("client", "krum"), ("client", "fedmedian"), ("sample", "scaffold")])
def test_incompatible_strategies_are_refused(mode, strategy):
    with pytest.raises(ValueError, match=strategy):
        PrivateStrategy(build_strategy(strategy), mode=mode, noise_multiplier=1.0, max_norm=1.0)
    raw = {
        "tasks": [{"name": "y"}],
        "partners": [{"name": "a", "path": "a.csv"}],
        "federation": {"strategy": strategy},
        "privacy": {"mode": mode},
    }
    with pytest.raises(ConfigError, match=rf"privacy.mode '{mode}'.*{strategy}"):
        parse_config(raw)


def test_privacy_config_defaults_and_bounds():
    raw = {"tasks": [{"name": "y"}], "partners": [{"name": "a", "path": "a.csv"}]}
    assert parse_config(raw).privacy.mode == "off"
    for bad, key in [
        ({"noise_multiplier": 0}, "noise_multiplier"),
        ({"delta": 0.5}, "delta"),
        ({"epsilon": 3}, "epsilon"),
    ]:
        with pytest.raises(ConfigError, match=f"privacy.{key}"):
            parse_config({**raw, "privacy": bad})
