"""Federated split-conformal math: histograms, the finite-sample quantile, temperature, sets, domain statistics and
the secure sum of small vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molfed.federated import conformal as cf
from molfed.federated.secure.local import LocalTransport, hold_update
from molfed.federated.secure.rounds import secure_vector_sum
from molfed.federated.types import QuorumError, Update

EDGES = np.linspace(0.0, 1.0, 11)  # bins of 0.1 and an open last bin >= 1


def test_histogram_bins_left_closed_with_an_open_last_bin_and_ignores_nan():
    counts = cf.histogram(np.array([-0.5, 0.0, 0.1, 0.15, 0.99, 1.0, 7.0, np.nan]), EDGES)
    assert counts.tolist() == [2, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2]


def test_quantile_is_the_ceil_n_plus_1_rank_rounded_up_to_its_bin():
    scores = np.arange(10) / 10 + 0.05  # 0.05, 0.15, ..., 0.95
    counts = cf.histogram(scores, EDGES)
    # rank ceil(11 * 0.8) = 9 -> 0.85, in bin [0.8, 0.9) -> 0.9
    assert cf.conformal_quantile(counts, EDGES, 0.8) == pytest.approx(0.9)
    assert cf.sample_quantile(scores, 0.8) == pytest.approx(0.85)
    # rank ceil(11 * 0.5) = 6 -> 0.55 -> 0.6
    assert cf.conformal_quantile(counts, EDGES, 0.5) == pytest.approx(0.6)
    # rank ceil(11 * 0.95) = 11 > 10: unbounded
    assert cf.conformal_quantile(counts, EDGES, 0.95) is None
    assert cf.sample_quantile(scores, 0.95) is None
    assert cf.conformal_quantile(np.zeros(11), EDGES, 0.9) is None
    # a score in the open last bin gives an unbounded quantile
    assert cf.conformal_quantile(cf.histogram(np.full(50, 3.0), EDGES), EDGES, 0.5) is None
    with pytest.raises(ValueError, match="level"):
        cf.conformal_quantile(counts, EDGES, 1.0)


def test_partners_histograms_add_up_to_the_pooled_one_and_the_quantile_is_within_one_bin_above_pooled():
    rng = np.random.default_rng(0)
    parts = [np.abs(rng.normal(0, s, size=n)) for s, n in ((0.5, 40), (1.0, 25), (2.0, 60))]
    pooled = np.concatenate(parts)
    total = cf.add_sums({"res": cf.histogram(x, cf.RESIDUAL_EDGES)} for x in parts)["res"]
    assert np.array_equal(total, cf.histogram(pooled, cf.RESIDUAL_EDGES))
    width = cf.RESIDUAL_EDGES[1]
    for level in (0.8, 0.9, 0.95):
        fed, exact = cf.conformal_quantile(total, cf.RESIDUAL_EDGES, level), cf.sample_quantile(pooled, level)
        assert exact is not None and fed is not None
        assert exact <= fed <= exact + width


def test_exchangeable_scores_are_covered_at_least_at_the_nominal_level():
    """The split-conformal guarantee: over many draws, P(test score <= quantile) >= level (and not far above)."""
    rng = np.random.default_rng(1)
    n_cal, trials, level = 19, 4000, 0.9
    hits = 0
    for _ in range(trials):
        scores = np.abs(rng.standard_t(3, size=n_cal + 1))
        q = cf.conformal_quantile(cf.histogram(scores[:n_cal], cf.RESIDUAL_EDGES), cf.RESIDUAL_EDGES, level)
        hits += q is None or scores[n_cal] <= q
    coverage = hits / trials
    # exact split conformal gives ceil(20 * 0.9) / 20 = 0.9 here; binomial sd over 4000 trials ~ 0.005
    assert 0.885 <= coverage <= 0.93


def test_temperature_recovers_overconfident_logits():
    rng = np.random.default_rng(2)
    true_logit = rng.normal(0, 2, size=4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    t = cf.best_temperature(cf.nll_grid(true_logit * 2.5, labels))  # a model 2.5x too confident
    assert 2.0 <= t <= 3.1
    assert cf.best_temperature(cf.nll_grid(true_logit, labels)) == pytest.approx(1.0, abs=0.2)
    assert cf.best_temperature(np.zeros(len(cf.TEMPERATURES))) == 1.0


def test_class_conditional_sets_cover_each_class_from_its_own_scores():
    logits = np.array([-3.0, -1.0, 0.5, 2.0, 4.0, -2.0, 1.0])
    labels = np.array([0.0, 0.0, 0.0, 1.0, 1.0, np.nan, 1.0])
    sums = cf.score_sums(
        labels[:, None], logits[:, None], logits[:, None], task_names=["act"], task_types=["classification"], std=[1.0]
    )
    assert sums["cls0:act"].sum() == 3 and sums["cls1:act"].sum() == 3  # the missing label is left out
    cal = cf.build_calibration(
        sums, task_names=["act"], task_types=["classification"], std=[1.0], levels=[0.5], method="federated"
    )
    task = cal.tasks[0]
    # class 0 scores z = (-3, -1, 0.5): rank ceil(4 * 0.5) = 2 -> -1 -> bin upper edge -0.99
    assert task.include_0_to[0] == pytest.approx(-0.99)
    # class 1 scores -z = (-4, -2, -1): rank 2 -> -2 -> -1.99; class 1 is in the set for z >= 1.99
    assert task.include_1_from[0] == pytest.approx(1.99)
    (has0, has1) = cf.prediction_sets(np.array([-2.0, 0.0, 3.0]), task)[0]
    assert has0.tolist() == [True, False, False] and has1.tolist() == [False, False, True]
    assert cal.tasks[0].temperature is not None and cal.tasks[0].temperature > 0


def test_regression_half_widths_are_quantiles_times_the_target_std():
    y = np.array([[1.0], [2.0], [3.0], [np.nan]])
    pred = np.array([[1.1], [2.3], [2.0], [0.0]])
    sums = cf.score_sums(y, pred, pred, task_names=["t"], task_types=["regression"], std=[2.0])
    assert sums["res:t"].sum() == 3
    cal = cf.build_calibration(sums, task_names=["t"], task_types=["regression"], std=[2.0], levels=[0.7], method="x")
    # scores |r| / 2 = 0.05, 0.15, 0.5; rank ceil(4 * 0.7) = 3 -> 0.5 -> upper edge 0.505 -> half-width 1.01
    assert cal.tasks[0].half_widths[0] == pytest.approx(1.01)
    (lo, hi) = cf.intervals(np.array([5.0]), cal.tasks[0])[0]
    assert lo[0] == pytest.approx(3.99) and hi[0] == pytest.approx(6.01)


def test_embedding_stats_from_moments_match_numpy_and_far_points_score_higher():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(500, 4)) @ np.diag([1.0, 2.0, 0.5, 3.0]) + 1.0
    stats = cf.embedding_stats(len(h), h.sum(axis=0), h.T @ h)
    assert np.allclose(stats.mean, h.mean(axis=0))
    cov = np.cov(h, rowvar=False)
    assert np.allclose(np.linalg.inv(stats.precision), cov + cf.RIDGE * np.trace(cov) / 4 * np.eye(4))
    typical = cf.domain_scores(h, stats)
    assert 0.8 < float(np.median(typical)) < 1.1  # ~ sqrt(chi2_4 / 4)
    far = cf.domain_scores(np.array([[1.0, 1.0, 6.0, 1.0]]), stats)  # 10 sd along the narrow axis
    assert far[0] > 4
    with pytest.raises(ValueError, match="at least 2"):
        cf.embedding_stats(1, h[0], np.outer(h[0], h[0]))


def test_secure_vector_sum_reveals_the_exact_sum_of_held_counts():
    layout = {"domain": (3,), "res:t": (4,)}
    held = {
        "a": {"domain": np.array([1.0, 0.0, 2.0]), "res:t": np.array([5.0, 0.0, 0.0, 1.0])},
        "b": {"domain": np.array([0.0, 3.0, 0.0]), "res:t": np.array([1.0, 1.0, 1.0, 1.0])},
        "c": {"domain": np.array([4.0, 0.0, 0.0]), "res:t": np.array([0.0, 0.0, 7.0, 0.0])},
    }
    for name, sums in held.items():
        hold_update(Update(name, sums, 1), run_id="run/calibration/scores", server_round=0)
    sums, survivors, failures = secure_vector_sum(
        LocalTransport(), sorted(held), layout=layout, run_id="run/calibration/scores", threshold=2
    )
    assert survivors == ("a", "b", "c") and failures == ()
    expected = cf.add_sums(held.values())
    for name in layout:
        assert np.array_equal(sums[name], expected[name])  # counts come back exact
    with pytest.raises(QuorumError):  # nothing held any more: every partner drops out
        secure_vector_sum(LocalTransport(), sorted(held), layout=layout, run_id="run/calibration/scores", threshold=2)


def test_percent_names_levels():
    assert [cf.percent(a) for a in (0.8, 0.9, 0.95, 0.975)] == ["80", "90", "95", "97.5"]
    assert math.isfinite(float(cf.percent(0.9)))
