import numpy as np
import torch

from molfed.train.metrics import masked_loss, task_metrics


def test_regression_metrics_by_hand():
    y = np.array([[1.0], [2.0], [3.0], [np.nan]])
    p = np.array([[1.0], [2.0], [5.0], [100.0]])  # the NaN row is masked
    m = task_metrics(y, p, ["regression"], ["t"])
    assert np.isclose(m["rmse"], np.sqrt(4 / 3)) and np.isclose(m["mae"], 2 / 3)
    assert np.isclose(m["r2"], 1 - 4 / 2)
    assert m["rmse.t"] == m["rmse"]


def test_classification_metrics_and_undefined_auc_omitted():
    y = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    p = np.array([[0.1, 0.5], [0.9, 0.5], [0.4, 0.5], [0.5, 0.5]])
    m = task_metrics(y, p, ["classification", "classification"], ["a", "b"])
    assert m["roc_auc.a"] == 0.75  # (pos, neg) pairs ranked right: 0.9>0.1, 0.9>0.5, 0.4>0.1; not 0.4>0.5
    assert "roc_auc.b" not in m  # one class only


def test_masked_loss_ignores_missing_labels_and_mixes_kinds():
    out = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])
    cls = torch.tensor([False, True])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(0.0), torch.tensor(1.0))
    expected = (1.0 + 2 * bce) / 3  # mse 1, two bce terms of log 2, the NaN masked
    assert torch.isclose(masked_loss(out, y, cls), expected)


def test_auc_and_average_precision_equal_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from molfed.train.metrics import average_precision, roc_auc

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        t = rng.integers(0, 2, n).astype(float)
        t[:2] = [0.0, 1.0]
        p = np.round(rng.random(n), 1)  # rounding makes ties
        assert np.isclose(roc_auc(t, p), roc_auc_score(t, p))
        assert np.isclose(average_precision(t, p), average_precision_score(t, p))
