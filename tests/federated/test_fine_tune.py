"""Personalization (``baselines.fine_tune_epochs``): each partner continues the kept global model on its own data and
keeps the epoch, or the global model itself, that validates best on its own validation split."""

import dataclasses

import pytest

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated.baselines import fine_tune
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.inprocess import prepare_demo_libraries, run_federation
from molfed.federated.strategies import build_strategy

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
def federated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine-tune")
    prepared = prepare_demo_libraries(write_demo_partners(root / "data", seed=0), root / "ws", seed=0)
    partners = [dataclasses.replace(d, splits={**d.splits, "train": d.splits["train"][:64]}) for d in prepared]
    result = run_federation(
        partners,
        spec=SPEC,
        init_weights=initial_weights(SPEC, 0),
        strategy=build_strategy("fedavg"),
        settings=SETTINGS,
        rounds=3,
        seed=0,
    )
    return partners, result


def _tune(data, result, settings, epochs=3):
    return fine_tune(
        data,
        spec=SPEC,
        weights=result.weights,
        scaling=result.scaling,
        settings=settings,
        epochs=epochs,
        seed=1,
        metric="rmse",
    )


def test_fine_tuning_trains_on_the_partner_and_reports_each_epoch(federated):
    partners, result = federated
    test, history = _tune(partners[0], result, SETTINGS)
    assert len(history) == 3 and all("rmse" in h for h in history)
    assert test["rmse"] > 0


def test_an_epoch_that_validates_worse_than_the_global_model_is_not_kept(federated):
    """A learning rate that wrecks the model: fine-tuning falls back to the global model, exactly."""
    partners, result = federated
    data = partners[1]
    start = p.evaluate_partner(data, spec=SPEC, weights=result.weights, scaling=result.scaling, splits=("val", "test"))
    test, history = _tune(data, result, dataclasses.replace(SETTINGS, lr=5.0), epochs=2)
    assert all(h["rmse"] > start["val"]["rmse"] for h in history)  # every epoch validated worse
    assert test == start["test"]


def test_fine_tuning_is_deterministic(federated):
    partners, result = federated
    assert _tune(partners[2], result, SETTINGS) == _tune(partners[2], result, SETTINGS)
