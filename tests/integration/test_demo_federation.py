"""The demo federation end to end: real RDKit, PyG, Prefect (ephemeral API) and MLflow (SQLite + artifacts).

One federation runs once per session; the tests read back what it produced.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from molfed.audit import scan, structure_needles
from molfed.config import load_config
from molfed.data.demo import partner_overrides, write_demo_partners

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CALIBRATED_COLUMNS = [
    *(f"expt_{side}_{level}" for level in ("80", "90", "95") for side in ("lower", "upper")),
    "domain_score",
    "in_domain",
]
ROUNDS = 3


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    from flows.federated_training import federated_training

    root = tmp_path_factory.mktemp("demo")
    paths = write_demo_partners(root / "data", seed=0)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    overrides = [
        f"tracking.tracking_uri={uri}",
        f"federation.rounds={ROUNDS}",
        "train.epochs=2",
        "baselines.fine_tune_epochs=2",
        "tracking.registered_model=molfed-test",
        "tracking.experiment=molfed-test",
    ]
    overrides += partner_overrides(paths, root / "ws")
    config = load_config(REPO / "configs" / "demo.yaml", overrides)
    result = federated_training(config)
    return SimpleNamespace(
        root=root, paths=paths, uri=uri, config=config, result=result, client=MlflowClient(tracking_uri=uri)
    )


def test_flow_reports_federated_local_and_pooled_per_partner(demo):
    rows = demo.result["rows"]
    assert [r["partner"] for r in rows] == ["alpha", "beta", "gamma", "all partners"]
    for row in rows:
        for kind in ("federated", "local-only", "pooled", "federated+fine-tune"):
            assert np.isfinite(row[kind]) and row[kind] > 0


def test_the_fine_tuned_child_run_holds_the_numbers_of_the_report(demo):
    children = demo.client.search_runs(
        [demo.result["experiment_id"]], f"tags.mlflow.parentRunId = '{demo.result['run_id']}'"
    )
    (tuned,) = [r for r in children if r.data.tags.get("molfed.kind") == "federated+fine-tune"]
    rows = {r["partner"]: r for r in demo.result["rows"]}
    for name in ("alpha", "beta", "gamma", "all partners"):
        key = "test_rmse" if name == "all partners" else f"test_rmse.{name}"
        assert tuned.data.metrics[key] == pytest.approx(rows[name]["federated+fine-tune"])


def test_prefect_recorded_a_completed_flow_run(demo):
    from prefect.client.orchestration import get_client

    async def flow_runs():
        async with get_client() as client:
            return await client.read_flow_runs()

    runs = asyncio.run(flow_runs())
    states = [r.state_type.value for r in runs if r.name and r.flow_id]
    assert "COMPLETED" in states


def test_mlflow_holds_every_round_and_partner_metadata(demo):
    client, run_id = demo.client, demo.result["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val_rmse")]
    assert steps == list(range(1, ROUNDS + 1))
    for name in ("alpha", "beta", "gamma"):
        assert len(client.get_metric_history(run_id, f"val_rmse.{name}")) == ROUNDS
        assert run.data.tags[f"partner.{name}.library_digest"]
        assert int(run.data.tags[f"partner.{name}.molecules"]) > 50
    assert run.data.metrics["rejects.gamma"] == 2  # the demo's two deliberately malformed rows
    assert "test_rmse" in run.data.metrics and "train_loss" in run.data.metrics
    assert run.data.params["federation.rounds"] == str(ROUNDS)
    assert run.data.tags["molfed.version.rdkit"] != "unknown"
    artifacts = {a.path for a in client.list_artifacts(run_id, "global_model")}
    assert artifacts == {f"global_model/round_{r:04d}.pt" for r in range(1, ROUNDS + 1)}
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {
        "plots/learning_curves.png",
        "plots/parity_test.png",
        "plots/value_of_federation.png",
        "plots/calibration_coverage.png",
    }
    inputs = run.inputs.dataset_inputs
    assert sorted(d.dataset.name for d in inputs) == ["alpha-library", "beta-library", "gamma-library"]
    assert all(d.dataset.source_type == "code" for d in inputs)


def test_baselines_are_comparable_child_runs(demo):
    client = demo.client
    exp = client.get_experiment_by_name("molfed-test")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{demo.result['run_id']}'")
    kinds = {r.data.tags["molfed.kind"]: r for r in children}
    assert set(kinds) == {"local-only", "pooled", "federated+fine-tune"}
    for r in kinds.values():
        assert {"test_rmse.alpha", "test_rmse.beta", "test_rmse.gamma"} <= set(r.data.metrics)


def test_registered_pyfunc_predicts_from_smiles(demo):
    mlflow.set_tracking_uri(demo.uri)
    version = demo.result["model_version"]
    model = mlflow.pyfunc.load_model(f"models:/molfed-test/{version}")
    preds = model.predict(pd.DataFrame({"smiles": ["c1ccccc1O", "CCN(CC)CC", "not a smiles"]}))
    assert list(preds.columns) == ["expt", "valid", *CALIBRATED_COLUMNS]
    assert preds["valid"].tolist() == [True, True, False]
    assert (preds["expt_lower_90"][:2] < preds["expt"][:2]).all() and (
        preds["expt"][:2] < preds["expt_upper_90"][:2]
    ).all()
    assert np.isfinite(preds["expt"][:2]).all() and np.isnan(preds["expt"][2])
    assert -30 < preds["expt"][0] < 10  # kcal/mol, original units


def test_cli_predict_writes_predictions(demo, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("id,smi\n1,CCO\n2,c1ccccc1\n")
    out = tmp_path / "out.csv"
    cmd = [
        sys.executable,
        "-m",
        "molfed.cli",
        "predict",
        "--model",
        demo.result["model_uri"],
        "--input",
        str(inp),
        "--smiles-column",
        "smi",
        "--output",
        str(out),
        "--tracking-uri",
        demo.uri,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "smi", "expt", "valid", *CALIBRATED_COLUMNS] and frame["valid"].all()
    assert (frame["expt_upper_95"] - frame["expt_lower_95"] > frame["expt_upper_80"] - frame["expt_lower_80"]).all()
    assert frame["domain_score"].notna().all() and frame["in_domain"].dtype == bool


def test_the_registered_model_carries_its_calibration_and_the_run_its_coverage(demo):
    """Issue 18: the calibration of the kept model travels in model.json; coverage per partner is logged."""
    import json

    mlflow.set_tracking_uri(demo.uri)
    client, run_id = demo.client, demo.result["run_id"]
    metrics = client.get_run(run_id).data.metrics
    for level in ("80", "90", "95"):
        assert 0 < metrics[f"test_coverage_{level}"] <= 1
        for name in ("alpha", "beta", "gamma"):
            assert 0 <= metrics[f"test_coverage_{level}.expt.{name}"] <= 1
            assert metrics[f"test_interval_width_{level}.expt.{name}"] > 0
    assert 0 <= metrics["test_out_of_domain_rate"] <= 1
    assert metrics["test_interval_width_80.expt"] < metrics["test_interval_width_95.expt"]
    logged = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="calibration/calibration.json")
        ).read_text()
    )
    from molfed.tracking import _download_model_files, parse_model_file

    _, meta_path = _download_model_files(demo.result["model_uri"], demo.uri, str(demo.root / "model-files"))
    shipped = parse_model_file(meta_path.read_bytes()).calibration
    assert shipped is not None and shipped.method == "federated" and shipped.levels == (0.8, 0.9, 0.95)
    assert list(shipped.tasks[0].half_widths) == logged["tasks"][0]["half_widths"]
    assert shipped.domain is not None and len(shipped.domain.mean) == demo.config.model.hidden_channels


def test_no_partner_structure_reaches_mlflow_prefect_or_logs(demo):
    smiles = [s for p in demo.paths.values() for s in pd.read_csv(p, dtype=str)["smiles"]]
    needles, keys = structure_needles(smiles)
    assert len(keys) > 600 and len(needles) > 300
    prefect_home = Path(os.environ["PREFECT_HOME"])
    assert (prefect_home / "prefect.db").exists()
    hits, n_files = scan([demo.root / "mlruns", prefect_home], needles, keys)
    assert n_files > 10
    assert hits == [], f"{len(hits)} partner structures found in {sorted({str(h.path) for h in hits})[:5]}"
    # control: the same scan finds a structure planted in a binary-ish file
    planted = demo.root / "planted.bin"
    planted.write_bytes(b"\x00\x01" + f'{{"x": "{needles[len(needles) // 2]}"}}'.encode() + b"\xff")
    hits, _ = scan([planted], needles, keys)
    assert hits and {h.kind for h in hits} == {"smiles"}


def test_first_model_becomes_champion_and_a_retraining_below_the_margin_leaves_it(demo):
    from flows.federated_training import federated_training

    client = demo.client
    assert demo.result["champion"].startswith("promoted: molfed-test@champion is version 1")
    assert str(client.get_model_version_by_alias("molfed-test", "champion").version) == "1"
    worse = demo.config.model_copy(
        update={
            "train": demo.config.train.model_copy(update={"lr": 1e-7, "epochs": 1}),
            "federation": demo.config.federation.model_copy(update={"rounds": 1}),
            "baselines": demo.config.baselines.model_copy(update={"local_only": False, "pooled": False}),
            "champion": demo.config.champion.model_copy(update={"min_improvement": 0.5}),  # must be 50 % better
        }
    )
    result = federated_training(worse)
    assert result["model_version"] == "2"
    assert result["champion"].startswith("kept: molfed-test@champion is version 1")
    assert str(client.get_model_version_by_alias("molfed-test", "champion").version) == "1"
    tags = client.get_model_version("molfed-test", "2").tags
    assert tags["molfed.champion.decision"] == "kept" and tags["molfed.champion.previous_version"] == "1"
    assert float(tags["molfed.champion.new_score"]) > 0.5 * float(tags["molfed.champion.previous_score"])
    assert client.get_run(result["run_id"]).data.tags["molfed.champion.decision"] == "kept"


def test_prefect_artifacts_report_and_round_table(demo):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts(key):
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    reports = [a.data for a in asyncio.run(artifacts("federation-report"))]  # one per run (the champion test adds one)
    ours = [r for r in reports if demo.result["run_id"] in r]
    assert len(ours) == 1 and "| alpha |" in ours[0] and "**Champion:** promoted" in ours[0]
    tables = [str(a.data) for a in asyncio.run(artifacts("round-metrics"))]
    assert tables and all("round" in t and "train_loss" in t for t in tables)
    assert any("val_rmse" in t for t in tables)


def test_the_best_validated_round_is_kept_tested_and_registered(demo):
    """``federation.selection: best_val`` (the default): the run tests and registers the global model of the round
    with the lowest validation RMSE over all partners, and says so in MLflow."""
    from molfed import layout
    from molfed.tracking import Tracker, load_model_parts

    client, run_id = demo.client, demo.result["run_id"]
    run = client.get_run(run_id)
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val_rmse")}
    chosen = int(run.data.metrics["selected_round"])
    assert chosen == min(history, key=history.get)
    assert run.data.metrics["rounds_run"] == ROUNDS
    assert run.data.tags["molfed.selection"].startswith(f"best validation rmse {history[chosen]:.4g} at round {chosen}")
    _, registered, _ = load_model_parts(demo.result["model_uri"], demo.uri)
    kept = Tracker(demo.uri, None).download_weights(run_id, layout.global_weights(chosen))
    assert registered.keys() == kept.keys() and all(np.array_equal(registered[k], kept[k]) for k in kept)
