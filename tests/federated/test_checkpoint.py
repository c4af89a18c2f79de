"""Round checkpoints round-trip bit for bit, for every strategy's server state; the test-only fault hook."""

import random

import numpy as np
import pytest
import torch

from molfed.federated import checkpoint as ck
from molfed.federated import faults
from molfed.federated.strategies import STRATEGIES, build_strategy
from molfed.federated.types import LOSS_BEFORE, SCAFFOLD_DELTA_C, Update

OPTIONS = {"krum": {"byzantine": 0}, "multikrum": {"byzantine": 0, "selected": 2}}


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(2, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}


def _updates(r: int) -> list[Update]:
    return [
        Update(p, _weights(10 * r + i), 3 + i, {LOSS_BEFORE: 1.0 + i}, {SCAFFOLD_DELTA_C: _weights(100 * r + i)})
        for i, p in enumerate(("a", "b", "c"))
    ]


def _checkpoint(strategy, weights, **sections) -> ck.Checkpoint:
    history = ck.RoundHistory([{"a": {"rmse": 0.1 + 0.2}}], [{"round": 1, "train_loss": float("nan")}])
    return ck.Checkpoint(2, weights, strategy.state_dict(), ck.capture_rng(), history, {"d": {"a": "x"}}, sections)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_restored_strategy_continues_exactly_like_the_original(name):
    strategy = build_strategy(name, **OPTIONS.get(name, {}))
    weights = _weights(0)
    for r in (1, 2):
        weights = strategy.run_round(r, weights, _updates(r), min_partners=1).weights
    restored = ck.from_bytes(ck.to_bytes(_checkpoint(strategy, weights)))
    fresh = build_strategy(name, **OPTIONS.get(name, {}))
    fresh.load_state_dict(restored.strategy)
    expected = strategy.run_round(3, weights, _updates(3), min_partners=1).weights
    got = fresh.run_round(3, restored.weights, _updates(3), min_partners=1).weights
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_history_rng_and_sections_round_trip():
    accountant = {"epsilon": 0.5, "steps": np.arange(3)}
    sections = ck.Sections()
    sections.add("accountant", lambda: accountant, accountant.update)
    with pytest.raises(ValueError, match="already registered"):
        sections.add("accountant", dict, print)
    state = _checkpoint(build_strategy("fedavg"), _weights(1), **sections.save())
    expected = (random.random(), np.random.rand(), torch.rand(2))
    ck.restore_rng(ck.from_bytes(ck.to_bytes(state)).rng)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
    restored = ck.from_bytes(ck.to_bytes(state))
    assert restored.history.val == [{"a": {"rmse": 0.1 + 0.2}}] and np.isnan(restored.history.rows[0]["train_loss"])
    accountant.clear()
    sections.load(restored.sections)
    assert accountant["epsilon"] == 0.5 and np.array_equal(accountant["steps"], np.arange(3))


def test_a_corrupt_checkpoint_is_a_clear_error():
    data = ck.to_bytes(_checkpoint(build_strategy("fedavg"), _weights(1)))
    with pytest.raises(ValueError, match="not a readable molfed checkpoint"):
        ck.from_bytes(data[: len(data) // 2])


def test_fault_hook_is_off_unless_set_and_targets_one_partner_and_stage(monkeypatch):
    faults.inject("beta", "round", 2)  # unset: nothing happens
    monkeypatch.setenv(faults.ENV, "beta@round2=raise;gamma@round*=raise-once;alpha@finish=sleep:0.1")
    faults.inject("beta", "round", 1)
    faults.inject("alpha", "round", 2)
    with pytest.raises(faults.InjectedFault):
        faults.inject("beta", "round", 2)
    with pytest.raises(faults.InjectedFault):
        faults.inject("gamma", "round", 7)
    faults.inject("gamma", "round", 8)  # raise-once: the retry succeeds
    faults.inject("alpha", "finish")


def test_resume_of_an_unknown_run_is_a_one_line_error(tmp_path, capsys):
    from molfed.cli import main

    assert main(["resume", "0123abcd", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("molfed: error: run 0123abcd: no federation/config.json in sqlite:///") and "\n" not in err
