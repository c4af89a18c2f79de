"""Partner sampling, fairness, the value-of-federation report, heterogeneity statistics and the leave-one-partner-out
contribution estimate, read back from one small federation (3 partners x 40 molecules, 2 rounds, 3 subflows)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from molfed.audit_cli import audit_stores
from molfed.config import load_config
from molfed.data.demo import partner_overrides, write_demo_partners
from molfed.federated.sampling import sample_partners

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAMES = ["alpha", "beta", "gamma"]
ROUNDS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from flows.federated_training import federated_training

    root = tmp_path_factory.mktemp("value")
    paths = write_demo_partners(root / "full", seed=0)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    overrides = [
        f"tracking.tracking_uri={uri}",
        "tracking.experiment=molfed-value",
        "tracking.registered_model=null",
        "champion.enabled=false",
        f"federation.rounds={ROUNDS}",
        "federation.fraction_fit=0.5",  # 2 of 3 partners per round
        "federation.min_partners=1",
        "baselines.contributions=true",
        "train.epochs=1",
        "model.hidden_channels=16",
        "model.num_layers=2",
    ]
    small = {name: root / "data" / f"{name}.csv" for name in NAMES}
    for name in NAMES:
        small[name].parent.mkdir(exist_ok=True)
        pd.read_csv(paths[name], dtype=str).head(40).to_csv(small[name], index=False)
    overrides += partner_overrides(small, root / "ws")
    config = load_config(REPO / "configs" / "demo.yaml", overrides)
    result = federated_training(config)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("molfed-value")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{result['run_id']}'")
    return SimpleNamespace(
        root=root,
        config=config,
        result=result,
        client=client,
        parent=client.get_run(result["run_id"]),
        children={r.data.tags["molfed.kind"] + r.data.tags.get("molfed.without", ""): r for r in children},
    )


def _artifact(run, path):
    return json.loads(Path(run.client.download_artifacts(run.result["run_id"], path, str(run.root / "dl"))).read_text())


def test_sampled_partners_are_the_seeded_draw_and_not_failures(run):
    sampled = _artifact(run, "federation/sampled_partners.json")
    expected = {str(r): sample_partners(NAMES, r, seed=0, fraction_fit=0.5) for r in range(1, ROUNDS + 1)}
    assert sampled == expected and all(len(s) == 2 for s in sampled.values())
    history = {
        m: [x.value for x in run.client.get_metric_history(run.result["run_id"], m)]
        for m in ("partners_sampled", "partners_failed")
    }
    assert history == {"partners_sampled": [2.0] * ROUNDS, "partners_failed": [0.0] * ROUNDS}


def test_fairness_metrics_on_the_federated_and_local_only_runs(run):
    for r in (run.parent, run.children["local-only"], run.children["pooled"]):
        values = [r.data.metrics[f"test_rmse.{n}"] for n in NAMES]
        assert r.data.metrics["test_rmse.worst"] == pytest.approx(max(values))
        assert r.data.metrics["test_rmse.std"] == pytest.approx(np.std(values))
    fairness = _artifact(run, "fairness.json")
    assert set(fairness) == {"federated", "local-only", "pooled"}
    assert fairness["local-only"]["worst"] == pytest.approx(run.children["local-only"].data.metrics["test_rmse.worst"])


def test_value_chart_in_mlflow_and_report_in_prefect(run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    plots = {a.path for a in run.client.list_artifacts(run.result["run_id"], "plots")}
    assert "plots/value_of_federation.png" in plots

    async def reports():
        async with get_client() as client:
            keys = ArtifactFilterKey(any_=["federation-report"])
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))

    ours = [a.data for a in asyncio.run(reports()) if run.result["run_id"] in a.data]
    assert len(ours) == 1
    report = ours[0]
    assert "gain vs local-only" in report and "![value of federation](data:image/png;base64,iVBOR" in report
    assert "Fairness across partners" in report and "| local-only |" in report
    assert "Contribution of each partner" in report and "Ring-scaffold overlap" in report


def test_heterogeneity_stats_are_aggregates_and_digests_never_stored(run):
    from tasks.value import scaffold_digests

    metrics = run.parent.data.metrics
    for n in NAMES:
        assert metrics[f"labels.expt.count.{n}"] > 20 and np.isfinite(metrics[f"labels.expt.mean.{n}"])
        assert metrics[f"scaffolds.count.{n}"] >= 1
    assert 0.0 <= metrics["scaffolds.jaccard.alpha.beta"] <= 1.0
    digests = {d for n in NAMES for d in scaffold_digests.fn(run.config, n)}  # this process's salt, as in the run
    roots = [run.root / "mlruns", Path(os.environ["PREFECT_HOME"])]
    files = [f for root in roots for f in root.rglob("*") if f.is_file()]
    assert len(files) > 10 and digests
    leaked = [f for f in files if any(d.encode() in f.read_bytes() for d in digests)]
    assert leaked == []


def test_leave_one_out_contributions(run):
    contributions = _artifact(run, "contributions.json")
    for k in NAMES:
        sub = run.children[f"leave-one-out{k}"]
        assert f"test_rmse.{k}" not in sub.data.metrics and sub.data.params["seed"] == "0"
        for j in set(NAMES) - {k}:
            expected = sub.data.metrics[f"test_rmse.{j}"] - run.parent.data.metrics[f"test_rmse.{j}"]
            assert contributions["pairwise"][k][j] == pytest.approx(expected)
        assert run.parent.data.metrics[f"contribution.{k}"] == pytest.approx(contributions["overall"][k])
    assert set(run.children) == {"local-only", "pooled"} | {f"leave-one-out{k}" for k in NAMES}


def test_leak_audit_finds_no_partner_structure_after_the_flow(run):
    """``molfed audit``'s index of this module's libraries over its MLflow store and the session's PREFECT_HOME."""
    report = audit_stores(run.config)
    assert report.files > 0 and report.rows > 0
    assert report.hits == [], [(str(h.path), h.location) for h in report.hits[:5]]
