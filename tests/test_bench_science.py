"""bench/science.py: recipes are the product's config, references are the flow's baselines, selection is by
validation loss, and the "all partners" row is the union of test splits."""

import importlib.util
import math
from pathlib import Path

import pytest

from molfed.config import load_config
from molfed.data.public_sets import PublicSet, load_public_set
from molfed.federated import baselines
from molfed.federated import coordinator as coord

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_science", REPO / "bench" / "science.py")
science = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(science)


def test_demo_recipe_reproduces_demo_yaml_model_train_and_federation(tmp_path):
    demo = load_config(REPO / "configs" / "demo.yaml")
    config = science.run_config(_tiny_set(), {"a": tmp_path / "a.csv"}, tmp_path, 0, science.RECIPES["demo"])
    for section in ("model", "train", "federation"):
        assert getattr(config, section) == getattr(demo, section)


def test_default_recipe_is_the_schema_defaults(tmp_path):
    config = science.run_config(_tiny_set(), {"a": tmp_path / "a.csv"}, tmp_path, 0, science.RECIPES["default"])
    fresh = type(config.federation)(), type(config.train)(), type(config.model)()
    assert (config.federation, config.train, config.model) == fresh


def test_joined_recipes_apply_in_order_and_unknown_names_list_choices():
    assert science.recipe_overrides("fedavgm+r30e1") == science.RECIPES["fedavgm"] + science.RECIPES["r30e1"]
    with pytest.raises(ValueError, match=r"unknown recipe 'fedavgg'; choose from \["):
        science.recipe_overrides("default+fedavgg")


def _tiny_set() -> PublicSet:
    full = load_public_set("freesolv")
    return PublicSet("tiny", full.label, full.task_type, full.unit, full.source, full.smiles[:120], full.labels[:120])


def test_references_are_the_flow_baselines_and_rows_follow_the_curves(tmp_path):
    pset = _tiny_set()
    names = ["p0", "p1", "p2"]
    paths = science.partition_dataset(
        list(pset.smiles),
        list(pset.labels),
        tmp_path / "data",
        method="scaffold",
        n_partners=3,
        seed=0,
        label_column=pset.label,
        names=names,
    )
    config = science.run_config(pset, paths, tmp_path, 0, ("federation.rounds=3", "train.epochs=1"))
    partners = science.prepare(config)
    curve, budget = science.federated_curve(config, partners)
    refs = science.baseline_curves(config, partners, budget)
    assert len(curve) == len(refs[coord.POOLED]) == len(refs[coord.LOCAL_ONLY]) == 3

    # measuring the test split every round changes nothing: the last round is what the flow's baselines give
    pooled, _ = baselines.pooled_baseline(partners, **budget, seed=science.p.derive_seed(0, "pooled"))
    for d in partners:
        assert refs[coord.POOLED][-1][d.name]["test"]["rmse"] == pytest.approx(pooled[d.name]["rmse"], rel=1e-6)
        local, _ = baselines.local_only_baseline(d, **budget, seed=science.p.derive_seed(0, "local-only", d.name))
        assert refs[coord.LOCAL_ONLY][-1][d.name]["test"]["rmse"] == pytest.approx(local["rmse"], rel=1e-6)

    curves = {coord.FEDERATED: curve, **refs}
    sizes = {s: {d.name: getattr(d.summary, f"n_{s}") for d in partners} for s in ("val", "test")}
    rows = science.result_rows(curves, "rmse", names, sizes)
    picks = science.selected_rounds(curves, names, sizes["val"], "rmse")
    for kind in curves:  # best = lowest validation RMSE over the union (the engine's rule); local-only per partner
        for n in names:
            group = names if kind != coord.LOCAL_ONLY else [n]
            rmse = [
                math.sqrt(
                    sum(c[m]["val"]["rmse"] ** 2 * sizes["val"][m] for m in group) / sum(sizes["val"][m] for m in group)
                )
                for c in curves[kind]
            ]
            assert picks["best"][kind][n] == 1 + rmse.index(min(rmse))
            assert picks["last"][kind][n] == 3
    for row in rows:
        if row["partner"] != coord.ALL_PARTNERS:
            r = row[f"{coord.FEDERATED}_round"]
            assert row[coord.FEDERATED] == curve[r - 1][row["partner"]]["test"]["rmse"]
    last_all = next(r for r in rows if r["selection"] == "last" and r["partner"] == coord.ALL_PARTNERS)
    union = sum(curve[-1][n]["test"]["rmse"] ** 2 * sizes["test"][n] for n in names) / sum(sizes["test"].values())
    assert last_all[coord.FEDERATED] == pytest.approx(math.sqrt(union))


def test_summary_counts_partners_beating_local_and_the_goal():
    def row(seed, partner, fed, pooled, local):
        return {
            "set": "s",
            "metric": "rmse",
            "n_partners": "2",
            "recipe": "r",
            "selection": "last",
            "seed": seed,
            "partner": partner,
            "strategy": "fedavg",
            coord.FEDERATED: fed,
            coord.POOLED: pooled,
            coord.LOCAL_ONLY: local,
        }

    rows = [
        row("0", coord.ALL_PARTNERS, 1.0, 1.0, 2.0),
        row("0", "a", 1, 1, 2),
        row("0", "b", 1, 1, 2),
        row("1", coord.ALL_PARTNERS, 1.2, 1.0, 2.0),
        row("1", "a", 1, 1, 2),
        row("1", "b", 3, 1, 2),
        row("2", coord.ALL_PARTNERS, 1.04, 1.0, 2.0),
        row("2", "a", 1, 1, 2),
        row("2", "b", 1, 1, 2),
    ]
    (s,) = science.summarize(rows)
    assert s["ratio_median"] == pytest.approx(1.04) and s["ratio_mean"] == pytest.approx(3.24 / 3)
    assert s["share_beats_local"] == pytest.approx(5 / 6) and s["seeds_all_beat_local"] == 2
    assert s["goal"] and s["every_mode"]
