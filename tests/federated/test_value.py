import math

import pytest

from flows.contributions import leave_one_out_config
from molfed import plots, reporting
from molfed.config import parse_config
from molfed.federated.coordinator import split_metrics
from molfed.federated.overlap import overlap, overlap_metrics, scaffold_digests
from molfed.federated.value import contributions, fairness, improvement

TEST = {
    "a": {"federated": {"rmse": 1.0}, "local-only": {"rmse": 2.0}},
    "b": {"federated": {"rmse": 3.0}, "local-only": {"rmse": 2.0}},
    "c": {"federated": {"rmse": 2.0}},
}


def test_fairness_worst_and_std_per_kind_only_when_every_partner_has_it():
    fair = fairness(TEST, "rmse", ["federated", "local-only"])
    assert fair == {"federated": {"worst": 3.0, "std": pytest.approx(math.sqrt(2 / 3))}}
    auc = {"a": {"federated": {"roc_auc": 0.9}}, "b": {"federated": {"roc_auc": 0.6}}}
    assert fairness(auc, "roc_auc", ["federated"])["federated"]["worst"] == 0.6  # higher is better: min


def test_split_metrics_carry_fairness_summaries():
    out = split_metrics("test", {"a": {"rmse": 1.0}, "b": {"rmse": 3.0}}, {"a": 1, "b": 1})
    assert out["test_rmse.worst"] == 3.0 and out["test_rmse.std"] == 1.0


def test_improvement_points_the_right_way():
    assert improvement(1.5, 2.0, "rmse") == 0.25
    assert improvement(0.9, 0.75, "roc_auc") == pytest.approx(0.2)
    assert improvement(None, 2.0, "rmse") is None and improvement(1.0, 0.0, "rmse") is None


def test_contributions_positive_when_leaving_a_partner_out_hurts_the_others():
    full = {"a": 1.0, "b": 2.0, "c": 1.0}
    without = {"a": {"b": 2.5, "c": 1.0}, "b": {"a": 0.5, "c": 1.0}, "c": {"a": 1.0, "b": 2.0}}
    pairwise, overall = contributions(full, without, "rmse", {"a": 1, "b": 1, "c": 1})
    assert pairwise["a"] == {"b": 0.5, "c": 0.0} and pairwise["b"]["a"] == -0.5 and overall["c"] == 0.0
    assert overall["a"] == pytest.approx(math.sqrt((2.5**2 + 1) / 2) - math.sqrt((4 + 1) / 2))
    pair_auc, _ = contributions({"a": 0.8, "b": 0.7}, {"a": {"b": 0.6}, "b": {"a": 0.9}}, "roc_auc", {"a": 1, "b": 1})
    assert pair_auc == {"a": {"b": pytest.approx(0.1)}, "b": {"a": pytest.approx(-0.1)}}
    table = reporting.contributions_markdown(pairwise, overall, "rmse")
    assert "| a | – | +0.500 | +0.000 |" in table


def test_leave_one_out_config_drops_the_partner_and_turns_extras_off():
    raw = {
        "tasks": [{"name": "y"}],
        "partners": [{"name": n, "path": f"{n}.csv"} for n in ("a", "b", "c")],
        "federation": {"min_partners": 3},
        "baselines": {"contributions": True},
    }
    sub = leave_one_out_config(parse_config(raw), "b", "run123")
    assert [p.name for p in sub.partners] == ["a", "c"] and sub.federation.min_partners == 2
    assert not (sub.baselines.local_only or sub.baselines.pooled or sub.baselines.contributions)
    assert sub.tracking.parent_run_id == "run123" and sub.tracking.registered_model is None
    assert not sub.champion.enabled and sub.seed == 0 and sub.name == "federation-without-b"
    with pytest.raises(ValueError, match="got partner 'z'"):
        leave_one_out_config(parse_config(raw), "z", "run123")


def test_scaffold_overlap_from_keyed_digests_only():
    salt = b"s" * 32
    a = scaffold_digests(["c1ccccc1", "c1ccccc1", "C1CC1", ""], salt)
    b = scaffold_digests(["c1ccccc1", "c1ccncc1"], salt)
    assert len(a) == 2 and not any("c1" in d for d in a)  # digests, not scaffolds
    assert a & b and not (a & scaffold_digests(["c1ccccc1"], b"t" * 32))  # another salt, other digests
    stats = overlap({"a": a, "b": b, "c": frozenset()})
    assert stats.shared[("a", "b")] == 1 and stats.jaccard[("a", "b")] == pytest.approx(1 / 3)
    assert stats.jaccard[("a", "c")] == 0.0 and stats.counts == {"a": 2, "b": 2, "c": 0}
    metrics = overlap_metrics(stats)
    assert metrics["scaffolds.jaccard.a.b"] == pytest.approx(1 / 3) and metrics["scaffolds.count.c"] == 0
    assert "| a | 1 | 0.33 | 0.00 | 2 |" in reporting.overlap_markdown(stats)
    with pytest.raises(ValueError, match="16 bytes"):
        scaffold_digests(["C1CC1"], b"short")


def test_label_metrics_from_moments_hide_small_counts():
    moments = {"a": {"count": [5.0, 2.0], "sum": [10.0, 1.0], "sumsq": [30.0, 1.0]}}
    out = reporting.label_metrics(moments, ["y", "z"])
    assert out["labels.y.count.a"] == 5 and out["labels.y.mean.a"] == 2.0 and out["labels.y.std.a"] == 2.0**0.5
    assert out["labels.z.count.a"] == 2 and "labels.z.mean.a" not in out  # 2 labels: mean would nearly be one


def test_results_markdown_gain_column_and_value_chart():
    rows = [
        {"partner": "a", "federated": 1.5, "local-only": 2.0, "pooled": 1.4},
        {"partner": "all partners", "federated": 1.5, "local-only": None, "pooled": 1.4},
    ]
    text = reporting.results_markdown(rows, "rmse", ["federated", "local-only", "pooled"])
    assert "| a | 1.500 | 2.000 | 1.400 | +25.0% |" in text and "| all partners | 1.500 | – | 1.400 | – |" in text
    fig = plots.value_bars(rows, "rmse", ["federated", "local-only", "pooled"])
    assert len(fig.axes[0].patches) == 6
    uri = plots.png_data_uri(fig)
    plots.close(fig)
    assert uri.startswith("data:image/png;base64,iVBOR")
