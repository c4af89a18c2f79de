"""The report's views (issue 19): parity bins that suit small partners, an all-partners panel, units on axes and
tables, and a round table a person can read."""

import numpy as np
import pytest

from molfed import plots, reporting


@pytest.mark.parametrize(("n_test", "bins"), [(0, 4), (20, 4), (50, 5), (200, 10), (5_000, 12)])
def test_parity_bins_grow_with_the_smallest_test_split(n_test, bins):
    assert plots.parity_bins(n_test) == bins


def test_a_demo_sized_partner_keeps_cells_on_the_diagonal():
    """30 molecules whose predictions track the measurement: 12 bins blank everything, the adaptive bins do not."""
    rng = np.random.default_rng(0)
    y = rng.normal(0.0, 1.0, 30)
    pred = y + rng.normal(0.0, 0.2, 30)
    fixed = plots.binned_parity(y, pred, plots.parity_edges(0.0, 1.0, 12))
    adaptive = plots.binned_parity(y, pred, plots.parity_edges(0.0, 1.0, plots.parity_bins(30)))
    assert sum(map(sum, fixed)) < sum(map(sum, adaptive))
    assert sum(map(sum, adaptive)) >= 15


def test_parity_figure_has_a_panel_per_partner_and_one_for_all_with_units():
    counts = {"a": [[5, 0], [0, 6]], "b": [[0, 0], [0, 7]]}
    fig = plots.parity_heatmaps(counts, [0.0, 1.0, 2.0], "expt", "kcal/mol")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["a (11 shown)", "b (7 shown)", "all partners (18 shown)"]
    assert fig.axes[0].get_xlabel() == "measured expt (kcal/mol)"
    plots.close(fig)


def test_learning_curve_axis_carries_the_unit_for_error_metrics_only():
    curves = {"a": {"federated": [1.0, 0.8, 0.7]}}
    fig = plots.learning_curves(curves, "rmse", "kcal/mol")
    assert fig.axes[0].get_ylabel() == "validation rmse (kcal/mol)"
    ticks = fig.axes[0].xaxis.get_major_locator().tick_values(1, 3)
    assert all(float(t).is_integer() for t in ticks)
    plots.close(fig)
    fig = plots.learning_curves(curves, "roc_auc", "kcal/mol")
    assert fig.axes[0].get_ylabel() == "validation roc_auc"
    plots.close(fig)


def test_round_table_is_short_and_has_a_column_per_partner():
    rows = [
        {"round": 1, "sampled": "a, b", "train_loss": 0.123456789, "partners_ok": 2.0, "val_rmse": 1.23456789},
        {"round": 2, "sampled": "a, b", "train_loss": 0.1},
    ]
    val = [{"a": {"rmse": 1.111111}, "b": {"rmse": 2.22222222}}]
    table = reporting.round_table(rows, val, "rmse")
    assert table[0] == {
        "round": 1,
        "sampled": "a, b",
        "train_loss": 0.1235,
        "val_rmse": 1.235,
        "val_rmse.a": 1.111,
        "val_rmse.b": 2.222,
    }
    assert table[1] == {"round": 2, "sampled": "a, b", "train_loss": 0.1}


def test_results_table_names_the_unit_and_what_all_partners_means():
    rows = [{"partner": "a", "federated": 1.0}, {"partner": "all partners", "federated": 1.0}]
    assert "Test rmse (kcal/mol) per partner" in reporting.results_markdown(rows, "rmse", ["federated"], "kcal/mol")
    plain = reporting.results_markdown(rows, "rmse", ["federated"])
    assert "all partners: RMSE over the union of the test splits" in plain
    assert "size-weighted mean" in reporting.results_markdown(rows, "roc_auc", ["federated"], "kcal/mol")
