"""Adding a strategy touches one file: a toy strategy defined and registered here is validated by the config, obeys
the secure-aggregation and privacy checks through its declared capabilities, shows in the docs table and runs in the
engine."""

import dataclasses

import numpy as np
import pytest

from molfed.config import parse_config
from molfed.data.demo import write_demo_partners
from molfed.errors import ConfigError
from molfed.federated import partner as p
from molfed.federated.capabilities import capability_table, caps, names_where
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.inprocess import prepare_demo_libraries, run_federation
from molfed.federated.strategies import STRATEGIES, Strategy, StrategyCaps, build_strategy


class Unweighted(Strategy):
    """The plain mean of the partners' models, whatever their sizes."""

    name = "toy_unweighted"
    caps = StrategyCaps(individual_updates=True)
    defaults = {}

    def aggregate(self, server_round, current, updates, *, invited):
        return {k: np.mean([u.weights[k] for u in updates], axis=0).astype(np.float32) for k in current}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(STRATEGIES, Unweighted.name, Unweighted)


def _config(**federation):
    return {
        "name": "toy",
        "partners": [{"name": "a", "path": "a.csv"}, {"name": "b", "path": "b.csv"}],
        "tasks": [{"name": "expt"}],
        "federation": {"strategy": Unweighted.name, **federation},
    }


def test_unregistered_the_config_refuses_it():
    with pytest.raises(ConfigError, match="unknown strategy 'toy_unweighted'"):
        parse_config(_config())


def test_registered_the_config_accepts_it_and_its_capabilities_apply(registered):
    assert parse_config(_config()).federation.strategy == Unweighted.name
    assert not caps(Unweighted.name).secure_sum and Unweighted.name not in names_where("client_dp")
    with pytest.raises(ConfigError, match="toy_unweighted"):  # needs individual updates: no secure sum
        parse_config({**_config(), "secure_aggregation": {"enabled": True}})
    assert f"| {Unweighted.name} |" in capability_table()


def test_registered_it_runs_in_the_engine(registered, tmp_path):
    partners = prepare_demo_libraries(write_demo_partners(tmp_path / "data", seed=0), tmp_path / "ws", seed=0)
    partners = [dataclasses.replace(d, splits={**d.splits, "train": d.splits["train"][:32]}) for d in partners]
    spec = model_spec(
        encoder="gine",
        hidden_channels=8,
        num_layers=1,
        dropout=0.0,
        readout="mean",
        head_layers=1,
        task_names=["expt"],
        task_types=["regression"],
    )
    result = run_federation(
        partners,
        spec=spec,
        init_weights=initial_weights(spec, 0),
        strategy=build_strategy(Unweighted.name),
        settings=p.TrainSettings(epochs=1, batch_size=16),
        rounds=2,
        seed=0,
    )
    assert len(result.val_history) == 2 and all(np.isfinite(w).all() for w in result.weights.values())
