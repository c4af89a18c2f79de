"""Validation as sums (molfed.federated.val_sums): what a partner adds to its masked update and what the coordinator
reads off the total."""

import numpy as np
import pytest

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated import val_sums
from molfed.federated.coordinator import combine_partners, initial_weights, model_spec
from molfed.federated.inprocess import prepare_demo_libraries
from molfed.federated.types import Update
from molfed.train.metrics import task_metrics

SPEC = model_spec(
    encoder="gine",
    hidden_channels=16,
    num_layers=2,
    dropout=0.0,
    readout="mean",
    head_layers=1,
    task_names=["expt"],
    task_types=["regression"],
)


@pytest.fixture(scope="module")
def partners(tmp_path_factory):
    root = tmp_path_factory.mktemp("val-sums")
    return prepare_demo_libraries(write_demo_partners(root / "data", seed=0), root / "ws", seed=0)


def test_the_totals_give_the_rmse_over_the_union_of_validation_splits(partners):
    weights = initial_weights(SPEC, 0)
    scaling = p.combine_moments([p.partner_label_moments(d) for d in partners], 1)
    sums = {d.name: val_sums.partner_sums(d, spec=SPEC, weights=weights, scaling=scaling) for d in partners}
    plain = {d.name: p.evaluate_partner(d, spec=SPEC, weights=weights, scaling=scaling)["val"] for d in partners}
    sizes = {d.name: len(d.splits["val"]) for d in partners}
    for d in partners:  # one partner: its own RMSE
        assert sums[d.name]["n_regression"][0] == sizes[d.name]
        assert np.sqrt(sums[d.name]["sse"][0] / sizes[d.name]) == pytest.approx(plain[d.name]["rmse"], rel=1e-5)
    totals = {k: sum(s[k] for s in sums.values()) for k in val_sums.KEYS}
    union = val_sums.metrics(totals, ["expt"], ["regression"])
    assert union["rmse"] == pytest.approx(combine_partners(plain, sizes)["rmse"], rel=1e-5)
    assert set(union) == {"rmse", "rmse.expt"}


def test_embedded_sums_come_back_from_a_sample_weighted_mean():
    """What the masked sum does: sum_k n_k x_k / sum_k n_k; take() multiplies back."""
    updates = [
        val_sums.embed(Update(name, {"w": np.ones(2, np.float32)}, n), {"sse": [s], "n_regression": [m],
                       "bce": [0.0], "n_classification": [0.0]})
        for name, n, s, m in (("a", 40, 12.5, 5), ("b", 160, 3.0, 20))
    ]  # fmt: skip
    total = sum(u.n_samples for u in updates)
    mean = {k: sum(u.n_samples * u.weights[k] for u in updates) / total for k in updates[0].weights}
    weights, totals = val_sums.take(mean, total)
    assert set(weights) == {"w"} and totals is not None
    assert totals["sse"][0] == pytest.approx(15.5, rel=1e-6) and totals["n_regression"][0] == pytest.approx(25)
    assert val_sums.take({"w": np.zeros(2)}, 10)[1] is None


def test_classification_selects_on_log_loss_which_matches_the_partners_own():
    t = np.array([[1.0], [0.0], [1.0], [np.nan]])
    q = np.array([[0.8], [0.3], [0.4], [0.9]])
    own = task_metrics(t, q, ["classification"], ["active"])
    bce = -(np.log(0.8) + np.log(0.7) + np.log(0.4))
    union = val_sums.metrics(
        {"sse": [0.0], "n_regression": [0.0], "bce": [bce], "n_classification": [3.0]}, ["active"], ["classification"]
    )
    assert union["logloss"] == pytest.approx(own["logloss"]) and "roc_auc" not in union
    assert val_sums.selection_metric("roc_auc") == "logloss" and val_sums.selection_metric("rmse") == "rmse"


def test_a_task_without_labels_anywhere_is_left_out():
    totals = {"sse": [4.0, 0.0], "n_regression": [4.0, 0.0], "bce": [0.0, 0.0], "n_classification": [0.0, 0.0]}
    assert val_sums.metrics(totals, ["a", "b"], ["regression", "regression"]) == {"rmse.a": 1.0, "rmse": 1.0}
