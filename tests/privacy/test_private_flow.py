"""One small DP-SGD federation through the real flow (Prefect ephemeral API, MLflow SQLite): epsilon per round in
MLflow, the budget refuses a run before it spends anything, and ``molfed audit`` passes on the store the run left
and fails once a structure is planted in it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from molfed.cli import main
from molfed.config import load_config
from molfed.data.demo import partner_overrides, write_demo_partners
from molfed.federated.dp_budget import PrivacyBudgetError, round_costs, spend_round
from molfed.privacy.accountant import PrivacyLedger
from molfed.tracking import Tracker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _overrides(root: Path, paths: dict[str, Path], uri: str) -> list[str]:
    out = [
        f"tracking.tracking_uri={uri}",
        "tracking.experiment=molfed-dp",
        "tracking.registered_model=null",
        "champion.enabled=false",
        "baselines.local_only=false",
        "baselines.pooled=false",
        "federation.rounds=2",
        "train.epochs=1",
        "train.batch_size=64",
        "model.hidden_channels=16",
        "model.num_layers=2",
        "privacy.mode=sample",
        "privacy.noise_multiplier=1.0",
        "privacy.epsilon_budget=50",
    ]
    out += partner_overrides(paths, root / "ws")
    return out


@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    from flows.federated_training import federated_training

    root = tmp_path_factory.mktemp("dp")
    paths = write_demo_partners(root / "data", seed=0)
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    overrides = _overrides(root, paths, uri)
    config = load_config(REPO / "configs" / "demo.yaml", overrides)
    result = federated_training(config)
    return SimpleNamespace(root=root, uri=uri, config=config, result=result, overrides=overrides)


def test_epsilon_of_every_partner_is_logged_per_round_and_matches_the_ledger(private_run):
    client = MlflowClient(tracking_uri=private_run.uri)
    run_id = private_run.result["run_id"]
    history = client.get_metric_history(run_id, "dp_epsilon")
    assert [m.step for m in history] == [1, 2] and 0 < history[0].value < history[1].value
    run = client.get_run(run_id)
    sizes = {n: int(run.data.tags[f"partner.{n}.split"].split("/")[0]) for n in ("alpha", "beta", "gamma")}
    costs = round_costs("sample", noise_multiplier=1.0, n_train=sizes, batch_size=64, epochs=1)
    ledger = PrivacyLedger(1e-5)
    for _ in range(2):
        expected = spend_round(ledger, costs)
    for name in sizes:
        assert run.data.metrics[f"dp_epsilon.{name}"] == pytest.approx(expected[f"dp_epsilon.{name}"])
    assert run.data.metrics["dp_epsilon"] == pytest.approx(max(expected[f"dp_epsilon.{n}"] for n in sizes))
    assert run.data.params["privacy.mode"] == "sample"


def test_a_budget_too_small_for_the_rounds_stops_before_round_one(private_run):
    from flows.federated_training import federated_training

    tight = private_run.config.model_copy(
        update={"privacy": private_run.config.privacy.model_copy(update={"epsilon_budget": 1.0})}
    )
    with pytest.raises(
        PrivacyBudgetError,
        match=r"round 1 would raise the epsilon of partner '\w+' from 0 to .* > "
        r"privacy.epsilon_budget 1.*allows 0 of federation.rounds=2",
    ):
        federated_training(tight)


def test_audit_passes_on_the_runs_store_and_fails_on_a_planted_structure(private_run, capsys):
    args = [
        "audit",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        *[x for o in private_run.overrides for x in ("--set", o)],
        "--prefect-home",
        os.environ["PREFECT_HOME"],
    ]
    assert main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "audit: clean" in out and "mlflow: " in out and "prefect: " in out
    tracker = Tracker(private_run.uri, "molfed-dp")
    run = tracker.start_run("leaky")
    rows = (private_run.root / "data" / "beta.csv").read_text().splitlines()[1:]
    longest = max((r.split(",")[0] for r in rows), key=len)
    tracker.log_text(run, f"example input: {longest}\n", "input_example.txt")
    tracker.end_run(run)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "input_example.txt" in out and "of partner beta" in out and "audit: FAILED" in out
