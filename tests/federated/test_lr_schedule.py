"""``train.lr_schedule`` reaches the partners' local training through the round number, and the baselines' rounds
follow the same schedule."""

import dataclasses

import numpy as np
import pytest

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated.baselines import train_alone
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
CONSTANT = p.TrainSettings(epochs=1, batch_size=32, lr=3e-3, rounds=3)
COSINE = dataclasses.replace(CONSTANT, lr_schedule="cosine")


@pytest.fixture(scope="module")
def partners(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule")
    prepared = prepare_demo_libraries(write_demo_partners(root / "data", seed=0), root / "ws", seed=0)
    return [dataclasses.replace(d, splits={**d.splits, "train": d.splits["train"][:48]}) for d in prepared]


def _weights_by_round(partners, settings):
    result = run_federation(
        partners,
        spec=SPEC,
        init_weights=initial_weights(SPEC, 0),
        strategy=build_strategy("fedavg"),
        settings=settings,
        rounds=3,
        seed=0,
        run_id="schedule",
    )
    return result.log.runs["schedule"].weights


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_cosine_trains_round_one_at_the_rate_and_later_rounds_below_it(partners):
    constant, cosine = _weights_by_round(partners, CONSTANT), _weights_by_round(partners, COSINE)
    assert _same(constant[1], cosine[1])  # round 1: the full rate either way
    assert not _same(constant[2], cosine[2])


def test_a_baseline_round_trains_at_the_federations_rate_for_that_round(partners):
    def run(settings, rounds):
        return train_alone(
            partners[0].splits["train"],
            spec=SPEC,
            init_weights=initial_weights(SPEC, 0),
            scaling={"mean": [0.0], "std": [1.0]},
            settings=settings,
            rounds=rounds,
            seed=0,
        )[0]

    assert _same(run(CONSTANT, 1), run(COSINE, 1))
    assert not _same(run(CONSTANT, 2), run(COSINE, 2))
