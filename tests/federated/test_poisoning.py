"""Poisoning drills: 5 partners, exactly one malicious, through the guard the flow uses (signatures + screens).

Plain-FedAvg numbers for the same drills are printed by ``bench/poisoning.py`` (reported, not asserted).
"""

import pytest
import torch

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated.coordinator import model_spec
from molfed.federated.drills import run_drill
from molfed.federated.inprocess import prepare_demo_libraries
from molfed.federated.integrity import Screens

ROUNDS = 3
SCREENS = Screens(max_norm_ratio=3.0, min_cosine=0.0)


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("poisoning")
    paths = write_demo_partners(root / "data", seed=0, fractions=(0.2,) * 5, n_bad_rows=0)
    partners = prepare_demo_libraries(paths, root / "ws", seed=0)
    spec = model_spec(
        encoder="gine",
        hidden_channels=16,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["expt"],
        task_types=["regression"],
    )
    settings = p.TrainSettings(epochs=1, batch_size=32, lr=0.01)

    def run(attack, strategy="fedavg", screens=SCREENS):
        return run_drill(
            partners, spec=spec, attack=attack, strategy=strategy, screens=screens, settings=settings, rounds=ROUNDS
        )

    clean = run("none", screens=None)
    yield run, clean
    torch.set_num_threads(threads)


@pytest.mark.parametrize("attack", ["scaled_x100", "sign_flip", "nan"])
def test_one_malicious_partner_of_five_is_rejected_and_the_model_stays_within_10_percent(drill, attack):
    run, clean = drill
    result = run(attack)
    assert result.rejected_honest == 0
    assert result.rejected >= ROUNDS - 1  # the sign flip may look harmless in round 1 (deltas still unaligned)
    assert abs(result.test_rmse - clean.test_rmse) <= 0.10 * clean.test_rmse, (result, clean)


def test_clean_run_rejects_nothing_and_the_x100_attack_ruins_unscreened_fedavg(drill):
    run, clean = drill
    assert clean.rejected == 0
    assert run("scaled_x100", screens=None).test_rmse > 10 * clean.test_rmse  # the drill can fail
