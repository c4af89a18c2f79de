"""Signed updates and secure aggregation in the real flow (local mode, Prefect + MLflow), two tiny federations.

Both runs configure a wrong public key for gamma (gamma signs with the key in its workspace): the plain run rejects
gamma's updates by signature; the secure run rejects gamma's round keys and aggregates alpha and beta from masked
vectors only. Same seed, same data: both must reach the same global weights within fixed-point precision.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from molfed.audit_cli import audit_stores
from molfed.config import load_config
from molfed.data.demo import partner_overrides, write_demo_partners
from molfed.federated import integrity, keys
from molfed.federated.secure.local import held_rounds
from molfed.federated.signing import generate_keypair
from molfed.tracking import Tracker

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two federations (fixture 165 s at load 12 on 2 cores)

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from flows.federated_training import federated_training

    root = tmp_path_factory.mktemp("integrity")
    paths = write_demo_partners(root / "data", seed=0)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    keys.write_keypair(root / "ws" / "gamma")  # gamma's real key; the config below names another one
    overrides = [
        f"tracking.tracking_uri={uri}",
        f"federation.rounds={ROUNDS}",
        "federation.min_partners=2",
        "train.epochs=1",
        "model.hidden_channels=16",
        "model.num_layers=2",
        "baselines.local_only=false",
        "baselines.pooled=false",
        "champion.enabled=false",
        "tracking.registered_model=null",
        "integrity.signing=true",
        f"integrity.public_keys.gamma={generate_keypair()[1]}",
    ]
    overrides += partner_overrides(paths, root / "ws")
    seen: list[list[bool]] = []
    original = integrity.GuardedStrategy.run_round

    def spy(self, server_round, current, updates, failures=(), **kwargs):
        seen.append([bool(u.weights) for u in updates])
        return original(self, server_round, current, updates, failures, **kwargs)

    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(integrity.GuardedStrategy, "run_round", spy)
        for kind, extra in (("plain", []), ("secure", ["secure_aggregation.enabled=true"])):
            seen.clear()
            config = load_config(REPO / "configs" / "demo.yaml", [*overrides, *extra])
            results[kind] = SimpleNamespace(
                result=federated_training(config), carried_weights=list(seen), config=config
            )
    return SimpleNamespace(uri=uri, client=MlflowClient(tracking_uri=uri), tracker=Tracker(uri, None), **results)


def _final(runs, kind):
    return runs.tracker.download_weights(runs.__dict__[kind].result["run_id"], f"global_model/round_{ROUNDS:04d}.pt")


def test_secure_aggregation_gives_the_global_weights_of_plain_fedavg(runs):
    plain, secure = _final(runs, "plain"), _final(runs, "secure")
    assert sorted(plain) == sorted(secure)
    for name in plain:
        np.testing.assert_allclose(secure[name], plain[name], atol=1e-4, rtol=0)
    assert any(not np.array_equal(secure[n], plain[n]) for n in plain)  # fixed point, not a copy of the plain run


def test_only_masked_vectors_reached_aggregation_under_secure_aggregation(runs):
    assert runs.secure.carried_weights == [[False, False, False]] * ROUNDS
    assert runs.plain.carried_weights == [[True, True, True]] * ROUNDS
    run = runs.client.get_run(runs.secure.result["run_id"])
    assert "plaintext 0" in run.data.tags["molfed.integrity.round.1"]
    assert held_rounds(runs.secure.result["run_id"]) == []  # no partner's plain update is left behind


def test_calibration_sums_travel_as_a_secure_sum_and_nothing_is_left_held(runs):
    """Issue 18: under secure aggregation the calibration's histograms and embedding sums are a secure sum; gamma,
    whose round keys are forged, drops out of it like out of a round, and the run still calibrates."""
    from molfed.federated.calibration import STEPS, secure_key

    for kind in ("plain", "secure"):
        run_id = runs.__dict__[kind].result["run_id"]
        metrics = runs.client.get_run(run_id).data.metrics
        assert 0 < metrics["test_coverage_90"] <= 1 and "test_interval_width_90.expt.alpha" in metrics
        assert all(held_rounds(secure_key(run_id, step)) == [] for step in STEPS)
    plain = runs.tracker.download_json(runs.plain.result["run_id"], "calibration/calibration.json")
    secure = runs.tracker.download_json(runs.secure.result["run_id"], "calibration/calibration.json")
    assert plain["tasks"][0]["n"] > secure["tasks"][0]["n"] > 0  # gamma's calibration molecules are not in the sum


@pytest.mark.parametrize(("kind", "reason"), [("plain", "signature rejected: bad signature"), ("secure", "round keys")])
def test_gamma_is_rejected_every_round_with_the_reason_logged(runs, kind, reason):
    run_id = runs.__dict__[kind].result["run_id"]
    history = runs.client.get_metric_history(run_id, "updates_rejected")
    assert [(m.step, m.value) for m in history] == [(r, 1.0) for r in range(1, ROUNDS + 1)]
    tags = runs.client.get_run(run_id).data.tags
    assert reason in tags["round.1.rejected.gamma"] and "forged or wrong key" in tags["round.1.rejected.gamma"]
    assert not any(key.startswith("round.") and "alpha" in key for key in tags)


def test_leak_audit_finds_no_partner_structure_after_the_flow(runs):
    """``molfed audit``'s index of this module's libraries over its MLflow store and the session's PREFECT_HOME."""
    report = audit_stores(runs.secure.config)
    assert report.files > 0 and report.rows > 0
    assert report.hits == [], [(str(h.path), h.location) for h in report.hits[:5]]


def test_validation_travels_as_sums_inside_the_masked_updates(runs):
    """Issue 16: under secure aggregation round 1's global model is validated from summed squared errors that rode
    in the masked vectors: the coordinator logs the value over alpha's and beta's validation splits (gamma's round
    keys were refused) and no partner's own value; it equals what alpha's and beta's plain reports combine to."""
    plain = runs.client.get_run(runs.plain.result["run_id"]).data
    secure = runs.client.get_run(runs.secure.result["run_id"]).data
    history = runs.client.get_metric_history(runs.secure.result["run_id"], "val_rmse")
    assert [m.step for m in history] == [1, 2]
    secure_per_partner = [
        m.step for n in ("alpha", "beta") for m in runs.client.get_metric_history(runs.secure.result["run_id"],
        f"val_rmse.{n}")
    ]  # fmt: skip
    assert secure_per_partner == [ROUNDS, ROUNDS]  # the final job's report only, never a round's
    n_val = {n: int(plain.tags[f"partner.{n}.split"].split("/")[1]) for n in ("alpha", "beta")}
    rmse = {n: runs.client.get_metric_history(runs.plain.result["run_id"], f"val_rmse.{n}")[0].value for n in n_val}
    expected = np.sqrt(sum(n_val[n] * rmse[n] ** 2 for n in n_val) / sum(n_val.values()))
    assert history[0].value == pytest.approx(expected, rel=1e-3)
    assert "val_rmse" in secure.metrics
