"""The engine (molfed.federated.engine) with the in-process pool and the memory run log: resume, faults, quorum.

The flow runs the same RoundLoop with Prefect tasks or site agents as the pool and MLflow as the run log; these
tests pin the loop's own behaviour without either.
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from molfed.data.demo import write_demo_partners
from molfed.errors import MolfedError
from molfed.federated import partner as p
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.engine import reopen
from molfed.federated.inprocess import MemoryRunLog, prepare_demo_libraries, run_federation
from molfed.federated.strategies import Strategy, StrategyCaps, build_strategy
from molfed.federated.types import QuorumError, Update

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
SETTINGS = p.TrainSettings(epochs=1, batch_size=32, lr=2e-3)


@pytest.fixture(scope="module")
def partners(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    prepared = prepare_demo_libraries(write_demo_partners(root / "data", seed=0), root / "ws", seed=0)
    return [dataclasses.replace(d, splits={**d.splits, "train": d.splits["train"][:64]}) for d in prepared]


def _run(partners, rounds, strategy="fedavgm", **kwargs):
    kwargs.setdefault("run_id", "engine-test")
    return run_federation(
        partners,
        spec=SPEC,
        init_weights=initial_weights(SPEC, 0),
        strategy=build_strategy(strategy),
        settings=SETTINGS,
        rounds=rounds,
        seed=0,
        **kwargs,
    )


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(partners):
    """Four rounds without interruption (FedAvgM: the strategy's server state must survive a resume)."""
    return _run(partners, 4)


def test_engine_and_in_process_pool_import_neither_prefect_nor_mlflow():
    code = (
        "import sys, molfed.federated.engine, molfed.federated.inprocess;"
        "bad = [m for m in ('prefect', 'mlflow') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_round_is_committed_with_weights_and_metrics(straight):
    run = straight.log.runs[straight.run_id]
    assert run.committed == 4 and sorted(run.checkpoints) == [0, 1, 2, 3, 4]
    assert _same(run.weights[4], straight.weights)
    assert [s for s, _ in straight.log.history(straight.run_id, "train_loss")] == [1, 2, 3, 4]
    assert [s for s, _ in straight.log.history(straight.run_id, "val_rmse")] == [1, 2, 3, 4]
    assert len(straight.val_history) == 4


def test_a_round_that_misses_the_quorum_stops_and_resume_reaches_the_same_weights(partners, straight):
    """A partner failing round 3 under an all-partner quorum stops the run after round 2's checkpoint; resuming
    it reaches bit for bit the weights and validation history of the uninterrupted run, with no metric twice."""

    def fail(name, server_round):
        if name == "beta" and server_round == 3:
            raise RuntimeError("site unreachable")

    log = MemoryRunLog()
    with pytest.raises(QuorumError, match=r"round\.3: 2 partner\(s\) succeeded, quorum is 3 .*beta: RuntimeError"):
        _run(partners, 4, log=log, fail=fail)
    assert log.runs["engine-test"].committed == 2
    assert log.runs["engine-test"].tags["round.3.failed.beta"] == "RuntimeError: site unreachable"
    log.end_run("engine-test", "FAILED")
    resumed = _run(partners, 4, log=log)
    assert _same(resumed.weights, straight.weights)
    assert resumed.val_history == straight.val_history
    assert log.history("engine-test", "train_loss") == straight.log.history("engine-test", "train_loss")


class FlakyStore(MemoryRunLog):
    """A run log whose store fails while committing round 3 (once)."""

    def __init__(self):
        super().__init__()
        self.failed = False

    def log_round(self, run_id, server_round, metrics, weights, checkpoint):
        if server_round == 3 and not self.failed:
            self.failed = True
            raise ConnectionError("tracking store unreachable")
        super().log_round(run_id, server_round, metrics, weights, checkpoint)


def test_the_tracking_store_failing_mid_round_stops_the_run_and_resume_reaches_the_same_weights(partners, straight):
    log = FlakyStore()
    with pytest.raises(ConnectionError):
        _run(partners, 4, log=log)
    assert log.runs["engine-test"].committed == 2  # round 3 was not committed: it is redone
    log.end_run("engine-test", "FAILED")
    resumed = _run(partners, 4, log=log)
    assert _same(resumed.weights, straight.weights)
    assert log.history("engine-test", "val_rmse") == straight.log.history("engine-test", "val_rmse")


def _tamper(kind):
    def seal(update, server_round, current):
        if update.partner != "gamma":
            return update
        if kind == "nan":
            weights = {n: np.full_like(np.asarray(w), np.nan) for n, w in update.weights.items()}
        else:  # one tensor of the wrong shape
            first = next(iter(update.weights))
            weights = {**update.weights, first: np.zeros((3, 1), dtype=np.float32)}
        return Update(update.partner, weights, update.n_samples, update.metrics)

    return seal


@pytest.mark.parametrize("kind", ["nan", "wrong_shape"])
def test_a_partner_sending_nan_or_a_wrong_shape_is_rejected_and_the_quorum_carries_the_round(partners, kind):
    result = _run(partners, 2, strategy="fedavg", min_partners=2, seal=_tamper(kind))
    tags = result.log.runs["engine-test"].tags
    assert "round.1.failed.gamma" in tags and "round.2.failed.gamma" in tags, tags
    assert all(np.isfinite(w).all() for w in result.weights.values())

    def absent(name, server_round):
        if name == "gamma":
            raise RuntimeError("offline")

    honest = _run(partners, 2, strategy="fedavg", min_partners=2, run_id="honest", fail=absent)
    assert _same(result.weights, honest.weights)  # exactly the honest partners' average


@pytest.mark.parametrize("kind", ["nan", "wrong_shape"])
def test_a_bad_update_under_an_all_partner_quorum_stops_the_run(partners, kind):
    with pytest.raises(QuorumError, match=r"round\.1: 2 usable update\(s\), quorum is 3 \(gamma: update rejected"):
        _run(partners, 2, strategy="fedavg", seal=_tamper(kind))


def test_reopen_refuses_a_finished_run_an_unknown_run_and_a_run_without_checkpoint():
    log = MemoryRunLog()
    with pytest.raises(MolfedError, match="no run 'nope'"):
        reopen(log, "nope")
    log.start_run("empty")
    log.end_run("empty", "FAILED")
    with pytest.raises(MolfedError, match="no checkpoint"):
        reopen(log, "empty")
    log.log_checkpoint("empty", b"x", 0)
    log.end_run("empty", "FINISHED")
    with pytest.raises(MolfedError, match="already finished"):
        reopen(log, "empty")


def test_resume_refuses_changed_partner_data(partners, tmp_path):
    log = MemoryRunLog()
    _run(partners[:2], 1, log=log)
    log.end_run("engine-test", "FAILED")
    with pytest.raises(MolfedError, match="libraries changed since the run started"):
        _run(partners, 2, log=log)


def test_selection_keeps_the_best_validated_round_and_survives_a_resume(partners):
    """``select``: the kept model is the global model of the round with the lowest validation RMSE (over all
    partners' validation splits, as logged); a run stopped and resumed keeps the same one."""
    straight = _run(partners, 4, select=True, run_id="sel")
    history = dict(straight.log.history("sel", "val_rmse"))
    assert straight.selected_round == min(history, key=history.get)
    assert _same(straight.selected_weights, straight.log.runs["sel"].weights[straight.selected_round])

    def fail(name, server_round):
        if name == "beta" and server_round == 4:
            raise RuntimeError("site unreachable")

    log = MemoryRunLog()
    with pytest.raises(QuorumError):
        _run(partners, 4, select=True, run_id="sel", log=log, fail=fail)
    log.end_run("sel", "FAILED")
    resumed = _run(partners, 4, select=True, run_id="sel", log=log)
    assert resumed.selected_round == straight.selected_round
    assert _same(resumed.selected_weights, straight.selected_weights)


class Worsening(Strategy):
    """FedAvg in round 1, then the global weights blown up by 1.5 each round: validation only gets worse."""

    name = "worsening"
    caps = StrategyCaps(individual_updates=False)

    def aggregate(self, server_round, current, updates, *, invited):
        if server_round == 1:
            return build_strategy("fedavg").aggregate(server_round, current, updates, invited=invited)
        return {k: (np.asarray(v) * 1.5).astype(np.float32) for k, v in current.items()}


def test_patience_stops_the_run_and_keeps_the_best_round(partners):
    result = run_federation(
        partners,
        spec=SPEC,
        init_weights=initial_weights(SPEC, 0),
        strategy=Worsening(),
        settings=SETTINGS,
        rounds=10,
        seed=0,
        select=True,
        patience=2,
    )
    # round 1 validated best; rounds 2 and 3 not better (known at round 4): the loop stops after round 4
    assert result.loop.done == 4 and result.selected_round == 1
    assert _same(result.selected_weights, result.log.runs["in-process"].weights[1])


def test_without_selection_the_last_round_is_kept(partners):
    result = _run(partners, 2, run_id="last")
    assert result.selected_round == 2 and _same(result.selected_weights, result.weights)


def test_a_baseline_selects_its_best_validated_round_like_the_federation(partners):
    from molfed.federated.baselines import local_only_baseline

    d, scaling = partners[0], p.combine_moments([p.partner_label_moments(x) for x in partners], 1)
    kwargs = dict(spec=SPEC, init_weights=initial_weights(SPEC, 0), scaling=scaling, settings=SETTINGS, seed=3)
    test, curve = local_only_baseline(d, rounds=6, select="rmse", **kwargs)
    best = min(range(len(curve)), key=lambda i: curve[i]["rmse"]) + 1
    assert len(curve) == 6
    prefix_test, _ = local_only_baseline(d, rounds=best, **kwargs)  # rounds are seeded: the same first `best` rounds
    assert test == prefix_test
