"""A federation where partners have private tasks, end to end (local mode, real RDKit, PyG, Prefect, MLflow).

alpha: the shared task + a private regression task; beta: the shared task + a private classification task (and
does not report its private metrics); gamma: a private regression task only. One run serves every test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from molfed.audit_cli import audit_stores
from molfed.config import load_config
from molfed.data.demo import write_demo_partners
from molfed.federated import private_heads as ph
from molfed.federated.jobs import model_dir
from molfed.federated.strategy_base import Strategy
from molfed.federated.weights import load_weights
from molfed.serving import predict_smiles

pytestmark = pytest.mark.integration

PRIVATE = {"alpha": ("logp", "regression"), "beta": ("soluble", "classification"), "gamma": ("bp", "regression")}


def _label(name: str, expt: float, row: int) -> str:
    if row % 7 == 3:  # some private labels missing
        return ""
    if name == "beta":
        return str(int(expt < -4))
    return f"{100.0 - 3.0 * expt:.3f}"  # far from the shared task's scale: the head needs its own scaling


def _with_private_column(path: Path, name: str) -> Path:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    column = PRIVATE[name][0]
    for i, row in enumerate(rows):
        try:
            row[column] = _label(name, float(row["expt"]), i)
        except ValueError:
            row[column] = ""
    out = path.with_name(f"{name}-private.csv")
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from flows.federated_training import federated_training

    root = tmp_path_factory.mktemp("private")
    paths = {n: _with_private_column(p, n) for n, p in write_demo_partners(root / "data", seed=0).items()}
    (root / "mlruns").mkdir()
    (root / "alpha-mlflow").mkdir()
    partners = []
    for name, path in paths.items():
        task, kind = PRIVATE[name]
        partners.append(
            {
                "name": name,
                "path": str(path),
                "workspace": str(root / "ws" / name),
                "private_tasks": [{"name": task, "type": kind}],
                **({"shared_tasks": []} if name == "gamma" else {}),
                **({"report_private_metrics": False} if name == "beta" else {}),
                **(
                    {"export_tracking_uri": f"sqlite:///{root / 'alpha-mlflow' / 'mlflow.db'}"}
                    if name == "alpha"
                    else {}
                ),
            }
        )
    cfg = root / "cfg.yaml"
    import yaml

    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "private-heads",
                "tasks": [{"name": "expt"}],
                "partners": partners,
                "model": {"hidden_channels": 16, "num_layers": 2},
                "train": {"epochs": 1, "batch_size": 64, "lr": 0.003},
                "federation": {"rounds": 2},
                "baselines": {"local_only": False, "pooled": False},
                "tracking": {
                    "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                    "experiment": "private-heads",
                    "registered_model": "private-heads-model",
                },
            }
        )
    )
    config = load_config(cfg)
    seen: list[tuple[int, str, frozenset[str], frozenset[str]]] = []
    original = Strategy.run_round

    def spy(self, server_round, current, updates, failures=(), *, min_partners=1):
        for u in updates:
            extras = frozenset(n for t in u.extras.values() for n in t)
            seen.append((server_round, u.partner, frozenset(u.weights), extras))
        return original(self, server_round, current, updates, failures, min_partners=min_partners)

    mp = pytest.MonkeyPatch()
    mp.setattr(Strategy, "run_round", spy)
    try:
        result = federated_training(config)
    finally:
        mp.undo()
    uri = config.tracking.tracking_uri
    return SimpleNamespace(root=root, config=config, result=result, seen=seen, client=MlflowClient(uri))


def _exported(run, name):
    return model_dir(run.root / "ws" / name, run.result["run_id"])


def test_only_trunk_and_shared_head_reach_aggregation(run):
    assert sorted((r, p) for r, p, _, _ in run.seen) == [(r, p) for r in (1, 2) for p in ("alpha", "beta", "gamma")]
    global_names = set(load_weights(str(_exported(run, "alpha") / ph.MODEL_FILE)))
    for _, partner, names, extras in run.seen:
        assert not any(n.startswith("private_head.") for n in names | extras)
        has_head = any(n.startswith("head.") for n in names)
        assert has_head == (partner != "gamma")  # gamma has no shared task: its updates are trunk only
        assert names <= global_names


def test_no_private_head_weight_appears_in_mlflow(run):
    store = run.root / "mlruns"
    pt_files = sorted(store.rglob("*.pt"))
    assert any("global_model" in str(f) for f in pt_files)
    for f in pt_files:
        names = set(torch.load(f, map_location="cpu", weights_only=True))
        assert names and not any(n.startswith("private_head.") for n in names), f
    heads = {
        name: ph.private_weights(load_weights(str(_exported(run, name) / ph.MODEL_FILE)))
        for name in ("alpha", "beta", "gamma")
    }
    arrays = [np.ascontiguousarray(a, np.float32) for h in heads.values() for a in h.values() if a.size >= 16]
    needles = [a.tobytes()[:64] for a in arrays]  # 16 floats: no chance match
    assert len(needles) >= 6
    files = [f for f in store.rglob("*") if f.is_file()]
    assert files
    for f in files:
        data = f.read_bytes()
        assert not any(n in data for n in needles), f"a private head's bytes found in {f}"
    control = (_exported(run, "alpha") / ph.MODEL_FILE).read_bytes()  # the scan finds them where they belong
    assert sum(n in control for n in needles) >= 2


def test_private_metrics_leave_only_where_allowed(run):
    metrics = run.client.get_run(run.result["run_id"]).data.metrics
    assert np.isfinite(metrics["private_test_rmse.logp.alpha"]) and np.isfinite(metrics["private_val_rmse.bp.gamma"])
    assert not any("soluble" in k for k in metrics)  # beta keeps its private metrics (and task name) to itself
    assert not any("soluble" in k for k in run.client.get_run(run.result["run_id"]).data.params)
    assert "test_rmse.alpha" in metrics and "test_rmse.gamma" not in metrics  # gamma has no shared task


def test_exported_model_is_the_federated_trunk_plus_the_private_head(run):
    kept = int(run.client.get_run(run.result["run_id"]).data.metrics["selected_round"])  # best_val: maybe round 1
    final = run.client.download_artifacts(run.result["run_id"], f"global_model/round_{kept:04d}.pt", str(run.root))
    global_weights = load_weights(final)
    for name in ("alpha", "beta", "gamma"):
        exported = load_weights(str(_exported(run, name) / ph.MODEL_FILE))
        for n, a in exported.items():
            if not n.startswith(("private_head.", "head.")) or name != "gamma" and n.startswith("head."):
                np.testing.assert_array_equal(a, global_weights[n])
    versions = run.client.search_model_versions("name='private-heads-model'")
    assert versions  # the registry holds the federation's model; the scan above shows no private head in it


def test_exported_model_predicts_its_private_task(run):
    from tasks.partner import partner_data

    model, info = ph.load_exported_model(_exported(run, "alpha"))
    data = partner_data(run.config, "alpha")
    reported = run.client.get_run(run.result["run_id"]).data.metrics["private_test_rmse.logp.alpha"]
    again = ph.column_metrics(model, data.splits["test"], data.layout.private_columns)["rmse.logp"]
    assert again == pytest.approx(reported, rel=1e-5)
    assert info["metrics"]["test"]["rmse.logp"] == pytest.approx(reported, rel=1e-6)

    smiles = ["CCO", "c1ccccc1O", "CCCCCCCC", "not a smiles"]
    from molfed.chem.standardize import StandardizeOptions

    frame = predict_smiles(model, smiles, standardize=StandardizeOptions(**info["standardize"]))
    assert list(frame.columns) == ["expt", "logp", "valid"] and frame["valid"].tolist() == [True] * 3 + [False]
    assert frame["logp"][:3].between(40, 160).all()  # on the private task's own scale (labels ~ 100 - 3 * expt)

    beta, _ = ph.load_exported_model(_exported(run, "beta"))
    probs = predict_smiles(beta, smiles[:3], standardize=StandardizeOptions(**info["standardize"]))["soluble"]
    assert probs.between(0, 1).all()


def test_partner_logs_its_own_model_to_its_own_mlflow(run):
    own = MlflowClient(f"sqlite:///{run.root / 'alpha-mlflow' / 'mlflow.db'}")
    experiment = own.get_experiment_by_name("molfed-partner-alpha")
    (found,) = own.search_runs([experiment.experiment_id])
    assert found.data.tags["molfed.federation_run"] == run.result["run_id"]
    assert {a.path for a in own.list_artifacts(found.info.run_id, "model")} == {"model/model.json", "model/model.pt"}
    assert "test_rmse.logp" in found.data.metrics


def test_exported_models_carry_their_partners_own_calibration_and_the_federation_none_of_it(run):
    from molfed.chem.standardize import StandardizeOptions
    from molfed.federated.calibration import calibration_graphs
    from tasks.partner import partner_data

    levels = tuple(run.config.calibration.levels)  # the run calibrates (local mode's default)
    own = {}
    for name, tasks in {"alpha": ["expt", "logp"], "beta": ["expt", "soluble"], "gamma": ["bp"]}.items():
        model, info = ph.load_exported_model(_exported(run, name))
        calibration = ph.exported_calibration(info)
        assert calibration is not None and calibration.method == "mondrian" and calibration.levels == levels
        assert [t.name for t in calibration.tasks] == tasks and calibration.domain is not None
        own[name] = (model, info, calibration)
    model, info, calibration = own["alpha"]
    data = partner_data(run.config, "alpha")
    y = torch.cat([g.y for g in calibration_graphs(data)]).numpy()
    expt, logp = calibration.tasks
    assert (expt.n, logp.n) == tuple(int(n) for n in (~np.isnan(y)).sum(axis=0))  # its own labels, each task's
    assert logp.n < expt.n and logp.half_widths[0] is not None  # private labels missing: fewer, still bounded at 80 %
    assert own["beta"][2].tasks[1].temperature is not None  # a private classification task: temperature and sets

    smiles = ["CCO", "c1ccccc1O", "CCCCCCCC", "not a smiles"]
    options = StandardizeOptions(**info["standardize"])
    frame = predict_smiles(model, smiles, standardize=options, calibration=calibration)
    for pct in ("80", "90", "95"):
        assert {f"logp_lower_{pct}", f"logp_upper_{pct}", f"expt_lower_{pct}"} <= set(frame.columns)
    assert (frame["logp_lower_80"][:3] < frame["logp"][:3]).all() and (
        frame["logp"][:3] < frame["logp_upper_80"][:3]
    ).all()
    assert frame["in_domain"].tolist()[3] is False and frame["domain_score"][:3].notna().all()
    sets = predict_smiles(own["beta"][0], smiles[:3], standardize=options, calibration=own["beta"][2])
    assert sets["soluble_set_90"].isin(["0", "1", "0|1", "none"]).all()

    # nothing of the partners' own calibrations reaches the federation's store: their own domain means and the
    # private tasks' half-widths, as their model.json writes them
    needles = set()
    for name, private in (("alpha", 1), ("beta", None), ("gamma", 0)):
        c = own[name][2]
        assert c.domain is not None
        values = [*c.domain.mean, *(c.tasks[private].half_widths if private is not None else ())]
        needles |= {repr(float(v)).encode() for v in values if v is not None and len(repr(float(v))) >= 12}
    assert len(needles) >= 40
    control = (_exported(run, "alpha") / ph.META_FILE).read_bytes()  # the scan finds them where they belong
    assert sum(n in control for n in needles) >= 16
    mine = MlflowClient(f"sqlite:///{run.root / 'alpha-mlflow' / 'mlflow.db'}")
    (found,) = mine.search_runs([mine.get_experiment_by_name("molfed-partner-alpha").experiment_id])
    logged = Path(mine.download_artifacts(found.info.run_id, "model/model.json", str(run.root / "own"))).read_bytes()
    assert logged == control  # alpha's own MLflow holds its calibrated model
    files = [f for f in (run.root / "mlruns").rglob("*") if f.is_file()]
    assert files
    for f in files:
        data_bytes = f.read_bytes()
        assert not any(n in data_bytes for n in needles), f"a partner's own calibration found in {f}"


def test_leak_audit_finds_no_partner_structure_after_the_flow(run):
    """``molfed audit``'s index of this module's libraries over its MLflow store and the session's PREFECT_HOME."""
    report = audit_stores(run.config)
    assert report.files > 0 and report.rows > 0
    assert report.hits == [], [(str(h.path), h.location) for h in report.hits[:5]]


def test_molfed_predict_reads_a_partners_exported_model_directory(run, tmp_path):
    """The partner's own model (trunk + private head, its own calibration) through ``molfed predict --model DIR``:
    the same columns as the Python API, nothing but ``model.pt`` and ``model.json`` read."""
    import pandas as pd

    from molfed.cli import main

    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1O", "CCCCCCCC"]}).to_csv(inp, index=False)
    directory = _exported(run, "alpha")
    assert main(["predict", "--model", str(directory), "--input", str(inp), "--output", str(out)]) == 0
    frame = pd.read_csv(out)
    assert {"expt", "logp", "logp_lower_90", "logp_upper_90", "expt_lower_90"} <= set(frame.columns)
    assert frame["logp"].between(40, 160).all()  # the private task, on its own scale

    from molfed.model_files import load_model_dir

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes((directory / "model.pt").read_bytes())
    info = json.loads((directory / "model.json").read_text())
    (bad / "model.json").write_text(json.dumps({**info, "code": "import os"}))  # an unknown key: refused
    with pytest.raises(ValueError, match="model.json"):
        load_model_dir(bad)
