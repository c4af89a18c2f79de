"""Calibrating a real federation (RDKit, PyG, torch): the held-out calibration split, the three partner steps, the
applicability domain on unlike molecules, the calibrated prediction columns and the calibration in ``model.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from molfed.chem.standardize import StandardizeOptions
from molfed.data.cache import featurize_library
from molfed.data.demo import write_demo_partners
from molfed.federated import calibration as cal
from molfed.federated import conformal as cf
from molfed.federated import coordinator as coord
from molfed.federated import partner as p
from molfed.federated.inprocess import InProcessPool, run_federation
from molfed.federated.strategies import build_strategy
from molfed.serving import predict_smiles

LEVELS = (0.8, 0.9, 0.95)
# unlike anything in the demo libraries (small neutral organics): a peptide, a long perfluoroalkyl chain, a
# polyphosphate, a steroid glycoside-sized macrocycle, a polyamine salt-like chain, an organosilicon cage
UNLIKE = [
    "CC(C)C[C@H](NC(=O)[C@@H](CC1=CC=CC=C1)NC(=O)[C@@H](CCCNC(N)=N)NC(=O)[C@@H](N)CO)C(=O)N[C@@H](CC(N)=O)C(=O)O",
    "FC(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)C(=O)O",
    "OP(=O)(O)OP(=O)(O)OP(=O)(O)OP(=O)(O)OP(=O)(O)O",
    "C1CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC1",
    "NCCNCCNCCNCCNCCNCCNCCNCCN",
    "C[Si]1(C)O[Si](C)(C)O[Si](C)(C)O[Si](C)(C)O[Si](C)(C)O1",
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cal")
    paths = write_demo_partners(root / "data", seed=0)
    partners = [
        p.prepare_partner(
            name,
            path=path,
            workspace=root / "ws" / name,
            smiles_column="smiles",
            label_columns=["expt"],
            task_types=["regression"],
            standardize=StandardizeOptions(),
            duplicates="merge",
            split_fractions=(0.8, 0.1, 0.1),
            seed=0,
            calibration_fraction=0.15,
        )
        for name, path in paths.items()
    ]
    spec = coord.model_spec(
        encoder="gine",
        hidden_channels=32,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["expt"],
        task_types=["regression"],
    )
    result = run_federation(
        partners,
        spec=spec,
        init_weights=coord.initial_weights(spec, 0),
        strategy=build_strategy("fedavg"),
        settings=p.TrainSettings(2, 32),
        rounds=4,
        seed=0,
    )
    pool = InProcessPool(partners, settings=p.TrainSettings(2, 32), seed=0)
    out = cal.calibrate(
        pool,
        spec=spec,
        weights=result.weights,
        scaling=result.scaling,
        levels=LEVELS,
        method="federated",
        domain_level=0.95,
        quorum=3,
    )
    return {"root": root, "paths": paths, "partners": partners, "spec": spec, "result": result, "cal": out}


def test_calibration_split_is_carved_from_training_by_scaffold_deterministically(fed, tmp_path):
    for d in fed["partners"]:
        assert len(d.splits["cal"]) > 0 and len(d.splits["train"]) > 0
        assert d.summary.n_train == len(d.splits["train"])
    name, path = next(iter(fed["paths"].items()))
    common = dict(
        path=path,
        smiles_column="smiles",
        label_columns=["expt"],
        task_types=["regression"],
        standardize=StandardizeOptions(),
        duplicates="merge",
        split_fractions=(0.8, 0.1, 0.1),
        seed=0,
    )
    plain = p.prepare_partner(name, workspace=tmp_path / "a", **common)
    carved = p.prepare_partner(name, workspace=tmp_path / "b", calibration_fraction=0.15, **common)
    again = p.prepare_partner(name, workspace=tmp_path / "c", calibration_fraction=0.15, **common)
    assert "cal" not in plain.splits
    key = _graph_keys
    assert key(carved.splits["train"]) | key(carved.splits["cal"]) == key(plain.splits["train"])
    assert key(carved.splits["val"]) == key(plain.splits["val"]) and key(carved.splits["test"]) == key(
        plain.splits["test"]
    )
    assert key(carved.splits["cal"]) == key(again.splits["cal"])  # same seed, same split
    assert 0.05 < len(carved.splits["cal"]) / len(plain.splits["train"]) < 0.3
    # scaffold-disjoint: no calibration molecule shares a ring scaffold with a training molecule
    fl = featurize_library(
        path,
        tmp_path / "b",
        smiles_column="smiles",
        label_columns=["expt"],
        task_types=["regression"],
        standardize=StandardizeOptions(),
        duplicates="merge",
    )
    scaffold = {k: s for k, s in zip(_graph_keys(fl.graphs, as_list=True), fl.scaffolds, strict=True)}
    rings = [{scaffold[k] for k in key(carved.splits[part])} - {""} for part in ("train", "cal")]
    assert rings[0] and not rings[0] & rings[1]  # a per-molecule carve would put some benzenes in both


def _graph_keys(graphs, as_list=False):
    keys = [(g.x.numpy().tobytes(), g.edge_index.numpy().tobytes(), g.y.numpy().tobytes()) for g in graphs]
    return keys if as_list else set(keys)


def test_federated_calibration_equals_pooled_calibration_scores(fed):
    """The summed histograms are the pooled calibration set's: quantiles within one bin of the exact pooled ones."""
    spec, result, calibration = fed["spec"], fed["result"], fed["cal"].calibration
    model = p.materialize(spec, result.weights, result.scaling)
    residuals = []
    for d in fed["partners"]:
        y, _, pred, _ = cal.outputs(model, d.splits["cal"])
        residuals.append(np.abs(y[:, 0] - pred[:, 0]) / result.scaling["std"][0])
    pooled = np.concatenate(residuals)
    assert calibration.tasks[0].n == len(pooled)
    for level, width in zip(LEVELS, calibration.tasks[0].half_widths, strict=True):
        exact = cf.sample_quantile(pooled, level)
        assert width is not None and exact is not None
        q = width / result.scaling["std"][0]
        assert exact <= q + 1e-9 <= exact + cf.RESIDUAL_EDGES[1] + 1e-9
    widths = calibration.tasks[0].half_widths
    assert widths[0] < widths[1] < widths[2]  # type: ignore[operator]


def test_measure_counts_add_up_and_metrics_follow_the_naming_scheme(fed):
    measured, calibration = fed["cal"].measured, fed["cal"].calibration
    sizes = {d.name: d.summary.n_test for d in fed["partners"]}
    assert {n: m["n.expt"] for n, m in measured.items()} == sizes
    metrics = cal.metrics(measured, calibration)
    for level in ("80", "90", "95"):
        union = sum(m[f"covered_{level}.expt"] for m in measured.values()) / sum(sizes.values())
        assert metrics[f"test_coverage_{level}"] == pytest.approx(union)
        for n in sizes:
            assert metrics[f"test_coverage_{level}.expt.{n}"] == metrics[f"test_coverage_{level}.{n}"]
            assert metrics[f"test_interval_width_{level}.expt.{n}"] > 0
    assert metrics["test_coverage_80"] <= metrics["test_coverage_90"] <= metrics["test_coverage_95"]
    assert 0 <= metrics["test_out_of_domain_rate"] <= 1
    rows = cal.coverage_table(measured, calibration)
    assert {r["partner"] for r in rows} == {*sizes, "all"} and len(rows) == 4 * len(LEVELS)


def test_domain_score_rises_for_molecules_unlike_any_partners(fed):
    spec, result, calibration = fed["spec"], fed["result"], fed["cal"].calibration
    model = p.materialize(spec, result.weights, result.scaling)
    import pandas as pd

    inside = [s for path in fed["paths"].values() for s in pd.read_csv(path)["smiles"].tolist()[:40]]
    ours = predict_smiles(model, inside, standardize=StandardizeOptions(), calibration=calibration)
    theirs = predict_smiles(model, UNLIKE, standardize=StandardizeOptions(), calibration=calibration)
    assert theirs["valid"].all()
    ours = ours[ours["valid"]]
    # every unlike molecule scores above the typical partner molecule, and as a group far above it
    assert theirs["domain_score"].min() > ours["domain_score"].median()
    assert theirs["domain_score"].median() > 1.5 * ours["domain_score"].median()
    # the flag (95 % of calibration molecules inside) fires more often for them than for partners' own molecules
    assert (~theirs["in_domain"]).mean() > 2 * (~ours["in_domain"]).mean()
    assert calibration.domain is not None and calibration.domain.threshold is not None


def test_predictions_carry_intervals_per_level_and_invalid_rows_stay_empty(fed):
    spec, result, calibration = fed["spec"], fed["result"], fed["cal"].calibration
    model = p.materialize(spec, result.weights, result.scaling)
    frame = predict_smiles(
        model, ["CCO", "c1ccccc1O", "not a smiles"], standardize=StandardizeOptions(), calibration=calibration
    )
    assert list(frame.columns) == [
        "expt",
        "valid",
        "expt_lower_80",
        "expt_upper_80",
        "expt_lower_90",
        "expt_upper_90",
        "expt_lower_95",
        "expt_upper_95",
        "domain_score",
        "in_domain",
    ]
    ok = frame[frame["valid"]]
    for level, width in zip(("80", "90", "95"), calibration.tasks[0].half_widths, strict=True):
        assert np.allclose(ok[f"expt_upper_{level}"] - ok["expt"], width)
        assert np.allclose(ok["expt"] - ok[f"expt_lower_{level}"], width)
    assert frame.loc[2, ["expt_lower_90", "domain_score"]].isna().all() and not frame.loc[2, "in_domain"]


def test_model_json_carries_the_calibration_and_a_mismatched_one_is_refused(fed):
    from molfed.tracking import parse_model_file

    spec, result, calibration = fed["spec"], fed["result"], fed["cal"].calibration
    meta = {
        "spec": spec.to_dict(),
        "scaling": result.scaling,
        "standardize": asdict(StandardizeOptions()),
        "calibration": asdict(calibration),
    }
    parsed = parse_model_file(json.dumps(meta))
    assert parsed.calibration == calibration
    bad_tasks = replace(calibration, tasks=(replace(calibration.tasks[0], name="other"),))
    with pytest.raises(ValueError, match="calibration.tasks"):
        parse_model_file(json.dumps({**meta, "calibration": asdict(bad_tasks)}))
    assert calibration.domain is not None
    bad_domain = replace(calibration, domain=replace(calibration.domain, mean=calibration.domain.mean[:-1]))
    with pytest.raises(ValueError, match="calibration.domain"):
        parse_model_file(json.dumps({**meta, "calibration": asdict(bad_domain)}))
    broken = {**meta, "calibration": {**asdict(calibration), "levels": [0.9, "x"]}}
    with pytest.raises(ValueError, match="^model.json: calibration"):
        parse_model_file(json.dumps(broken))
    assert parse_model_file(json.dumps({k: v for k, v in meta.items() if k != "calibration"})).calibration is None


def test_mondrian_partners_measure_with_and_keep_their_own_calibration(fed):
    spec, result = fed["spec"], fed["result"]
    pool = InProcessPool(fed["partners"], settings=p.TrainSettings(2, 32), seed=0)
    out = cal.calibrate(
        pool,
        spec=spec,
        weights=result.weights,
        scaling=result.scaling,
        levels=LEVELS,
        method="mondrian",
        domain_level=0.95,
        quorum=3,
    )
    assert out.calibration.method == "mondrian"
    for d in fed["partners"]:
        assert d.workspace is not None
        own = json.loads((Path(d.workspace) / "models" / "in-process" / "calibration.json").read_text())
        assert own["method"] == "mondrian" and own["tasks"][0]["n"] == len(d.splits["cal"])
    with pytest.raises(ValueError, match="unknown calibration step"):
        cal.run_step(fed["partners"][0], "bogus", spec=spec, weights=result.weights, scaling=result.scaling, payload={})


def test_classification_gets_a_temperature_class_conditional_sets_and_probability_columns(tmp_path):
    from molfed.data.partition import partition_dataset
    from molfed.data.public_sets import load_public_set

    pset = load_public_set("solubility_cls")
    paths = partition_dataset(
        list(pset.smiles[:300]),
        list(pset.labels[:300]),
        tmp_path / "data",
        method="scaffold",
        n_partners=2,
        seed=0,
        label_column=pset.label,
        names=["a", "b"],
    )
    partners = [
        p.prepare_partner(
            name,
            path=path,
            workspace=tmp_path / "ws" / name,
            smiles_column="smiles",
            label_columns=[pset.label],
            task_types=["classification"],
            standardize=StandardizeOptions(),
            duplicates="merge",
            split_fractions=(0.8, 0.1, 0.1),
            seed=0,
            calibration_fraction=0.2,
        )
        for name, path in paths.items()
    ]
    spec = coord.model_spec(
        encoder="gine",
        hidden_channels=16,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=1,
        task_names=[pset.label],
        task_types=["classification"],
    )
    settings = p.TrainSettings(2, 32)
    result = run_federation(
        partners,
        spec=spec,
        init_weights=coord.initial_weights(spec, 0),
        strategy=build_strategy("fedavg"),
        settings=settings,
        rounds=2,
        seed=0,
    )
    out = cal.calibrate(
        InProcessPool(partners, settings=settings, seed=0),
        spec=spec,
        weights=result.weights,
        scaling=result.scaling,
        levels=LEVELS,
        method="federated",
        domain_level=0.95,
        quorum=2,
    )
    task = out.calibration.tasks[0]
    assert task.type == "classification" and task.n == sum(len(d.splits["cal"]) for d in partners)
    assert task.temperature is not None and cf.TEMPERATURES[0] <= task.temperature <= cf.TEMPERATURES[-1]
    metrics = cal.metrics(out.measured, out.calibration)
    assert 1.0 <= metrics[f"test_set_size_90.{pset.label}"] <= 2.0  # a set holds one or both classes
    assert metrics[f"test_set_size_80.{pset.label}"] <= metrics[f"test_set_size_95.{pset.label}"]
    model = p.materialize(spec, result.weights, result.scaling)
    frame = predict_smiles(model, ["CCO", "c1ccccc1Cl"], standardize=StandardizeOptions(), calibration=out.calibration)
    assert f"{pset.label}_probability" in frame and f"{pset.label}_set_90" in frame
    assert set(frame[f"{pset.label}_set_95"]) <= {"0", "1", "0|1", "none"}
    raw_p = frame[pset.label].to_numpy()
    z = np.log(raw_p / (1 - raw_p))
    assert np.allclose(frame[f"{pset.label}_probability"], 1 / (1 + np.exp(-z / task.temperature)), atol=1e-5)


def test_the_same_model_and_partners_give_the_same_calibration(fed):
    pool = InProcessPool(fed["partners"], settings=p.TrainSettings(2, 32), seed=0)
    again = cal.calibrate(
        pool,
        spec=fed["spec"],
        weights=fed["result"].weights,
        scaling=fed["result"].scaling,
        levels=LEVELS,
        method="federated",
        domain_level=0.95,
        quorum=3,
    )
    assert again.calibration == fed["cal"].calibration and again.measured == fed["cal"].measured


def test_a_partner_that_fails_a_step_is_data_and_below_the_quorum_the_calibration_stops(fed):
    from molfed.federated.types import QuorumError

    class Failing(InProcessPool):
        def calibrate(self, step, spec, weights, scaling, payload, state_key="in-process"):
            replies, failures = super().calibrate(step, spec, weights, scaling, payload, state_key)
            if step == "scores":
                failures.append(cal.Failure("p-late", "RuntimeError: gone"))
                replies.pop(next(iter(replies)))
            return replies, failures

    pool = Failing(fed["partners"], settings=p.TrainSettings(2, 32), seed=0)
    args = dict(spec=fed["spec"], weights=fed["result"].weights, scaling=fed["result"].scaling, levels=LEVELS)
    out = cal.calibrate(pool, **args, method="federated", domain_level=0.95, quorum=2)
    assert [f.partner for f in out.failures] == ["p-late"]
    assert out.calibration.tasks[0].n < fed["cal"].calibration.tasks[0].n
    with pytest.raises(QuorumError, match="calibration \\(scores\\): 2 partner"):
        cal.calibrate(pool, **args, method="federated", domain_level=0.95, quorum=3)


def test_the_carve_takes_about_its_fraction_in_whole_scaffold_groups():
    """Many singletons (acyclic) and a few big groups, like a real library: the calibration part is ~the fraction."""
    rng = np.random.default_rng(0)
    scaffolds = [""] * 300 + [f"ring{rng.integers(0, 60)}" for _ in range(500)] + ["big"] * 150
    for fraction in (0.05, 0.1, 0.2):
        train, calib = p.carve_calibration(scaffolds, fraction, seed=3)
        assert sorted([*train, *calib]) == list(range(len(scaffolds)))
        assert abs(len(calib) / len(scaffolds) - fraction) < 0.02
        rings = [{scaffolds[i] for i in part} - {""} for part in (train, calib)]
        assert not rings[0] & rings[1]
    again = p.carve_calibration(scaffolds, 0.1, seed=3)
    assert np.array_equal(again[1], p.carve_calibration(scaffolds, 0.1, seed=3)[1])
    # one chemotype holds most of the library (a partner cut by scaffold: all its benzenes): it stays in training
    dominant = ["c1ccccc1"] * 318 + [f"ring{i % 9}" for i in range(23)]
    train, calib = p.carve_calibration(dominant, 0.1, seed=5)
    assert set(range(318)) <= set(train.tolist()) and 0 < len(calib) <= 34
