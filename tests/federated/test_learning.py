"""The learning test: a federation that learns nothing fails here (the product's engine, in-process pool)."""

import dataclasses

import numpy as np
import pytest

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.inprocess import prepare_demo_libraries, run_federation
from molfed.federated.partner_state import state_path
from molfed.federated.scaffold import STATE_NAME
from molfed.federated.strategies import STRATEGIES, build_strategy


@pytest.fixture(scope="module")
def partners(tmp_path_factory):
    root = tmp_path_factory.mktemp("learn")
    paths = write_demo_partners(root / "data", seed=0)
    return prepare_demo_libraries(paths, root / "ws", seed=0)


def _run(partners, rounds=3, seed=0, strategy="fedavg"):
    spec = model_spec(
        encoder="gine",
        hidden_channels=32,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["expt"],
        task_types=["regression"],
    )
    init = initial_weights(spec, seed)
    result = run_federation(
        partners,
        spec=spec,
        init_weights=init,
        strategy=build_strategy(strategy),
        settings=p.TrainSettings(epochs=2, batch_size=32, lr=2e-3),
        rounds=rounds,
        seed=seed,
    )
    before = {
        d.name: p.evaluate_partner(d, spec=spec, weights=init, scaling=result.scaling)["val"]["loss"] for d in partners
    }
    return before, result


def test_three_partners_three_rounds_lower_validation_loss(partners):
    before, result = _run(partners)
    after = {name: m["loss"] for name, m in result.val_history[-1].items()}
    assert np.mean(list(after.values())) < 0.8 * np.mean(list(before.values()))  # measured 0.75x; no learning ~ 1x
    for name in before:
        assert after[name] < before[name], name


def test_same_seed_same_metrics_and_weights(partners):
    _, a = _run(partners, rounds=2)
    _, b = _run(partners, rounds=2)
    assert a.val_history == b.val_history
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


#: Strategies that must already beat the initial model after 2 rounds; the rest must at least stay finite.
MUST_LEARN = {"fedavg", "fedprox", "fedadam", "scaffold"}


@pytest.fixture(scope="module")
def small_partners(partners):
    """The demo partners with 96 training molecules each (validation splits unchanged): fast, still learnable."""
    return [dataclasses.replace(d, splits={**d.splits, "train": d.splits["train"][:96]}) for d in partners]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_two_rounds_in_the_engine(small_partners, name):
    partners = small_partners
    before, result = _run(partners, rounds=2, strategy=name)
    assert len(result.val_history) == 2
    assert all(np.isfinite(w).all() for w in result.weights.values())
    after = {n: m["loss"] for n, m in result.val_history[-1].items()}
    assert all(np.isfinite(v) for v in after.values())
    if name in MUST_LEARN:
        assert np.mean(list(after.values())) < np.mean(list(before.values()))
    if name == "scaffold":  # each partner kept its control variate in its own workspace
        assert all(state_path(d.workspace, "in-process", STATE_NAME).exists() for d in partners)
