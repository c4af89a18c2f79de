import math

from molfed.federated.coordinator import comparison_rows, split_metrics, train_metrics
from molfed.federated.types import Update


def test_split_metrics_combine_rmse_over_the_union_and_weight_the_rest():
    out = split_metrics("test", {"a": {"rmse": 1.0, "r2": 0.5}, "b": {"rmse": 3.0, "r2": 0.1}}, {"a": 3, "b": 1})
    assert out["test_rmse.a"] == 1.0 and out["test_rmse.b"] == 3.0
    assert math.isclose(out["test_rmse"], math.sqrt((3 * 1 + 1 * 9) / 4))  # RMSE over all 4 molecules
    assert math.isclose(out["test_r2"], (3 * 0.5 + 0.1) / 4)


def test_comparison_rows_with_all_partners_row():
    test = {"a": {"federated": {"rmse": 1.0}, "pooled": {"rmse": 2.0}}, "b": {"federated": {"rmse": 1.0}}}
    rows = comparison_rows(test, "rmse", ["federated", "pooled"], {"a": 1, "b": 1})
    assert rows[0] == {"partner": "a", "federated": 1.0, "pooled": 2.0}
    assert rows[1] == {"partner": "b", "federated": 1.0, "pooled": None}
    assert rows[2] == {"partner": "all partners", "federated": 1.0, "pooled": None}  # pooled incomplete


def test_train_metrics_count_failed_partners():
    w = {}
    out = train_metrics([Update("a", w, 1, {"train_loss": 2.0}), Update("b", w, 3, {"train_loss": 1.0})], 3)
    assert out == {"train_loss": 1.25, "partners_sampled": 3.0, "partners_ok": 2.0, "partners_failed": 1.0}


def test_decide_promotion_by_metric_direction_and_margin():
    from molfed.federated.coordinator import decide_promotion

    assert decide_promotion(1.0, None, metric="rmse", min_improvement=0.1)[0]  # no champion yet
    assert decide_promotion(0.89, 1.0, metric="rmse", min_improvement=0.1)[0]  # 11 % lower RMSE
    promote, reason = decide_promotion(0.95, 1.0, metric="rmse", min_improvement=0.1)
    assert not promote and "+5.0% < 10.0%" in reason
    assert not decide_promotion(1.2, 1.0, metric="rmse", min_improvement=0.0)[0]  # worse
    assert decide_promotion(0.9, 0.8, metric="roc_auc", min_improvement=0.1)[0]  # higher AUC is better
    assert not decide_promotion(0.7, 0.8, metric="roc_auc", min_improvement=0.0)[0]
    assert not decide_promotion(None, 1.0, metric="rmse", min_improvement=0.0)[0]
    assert not decide_promotion(1.0, 1.0, metric="rmse", min_improvement=0.0)[0]  # a tie keeps the champion
