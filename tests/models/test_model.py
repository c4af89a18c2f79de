import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from molfed.chem.featurize import ATOM_DIM, BOND_DIM
from molfed.federated.weights import get_weights, set_weights
from molfed.models.model import ModelSpec, build_model
from molfed.models.registry import ENCODERS, encoder_names


def _spec(encoder: str, tasks=("a", "b"), types=("regression", "classification")) -> ModelSpec:
    return ModelSpec(encoder, ATOM_DIM, BOND_DIM, 16, 2, 0.0, "mean", 2, tuple(tasks), tuple(types))


def _batch() -> Batch:
    g1 = Data(
        x=torch.rand(3, ATOM_DIM),
        edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),
        edge_attr=torch.rand(4, BOND_DIM),
        y=torch.tensor([[1.0, 0.0]]),
    )
    g2 = Data(
        x=torch.rand(1, ATOM_DIM),
        edge_index=torch.empty(2, 0, dtype=torch.long),
        edge_attr=torch.empty(0, BOND_DIM),
        y=torch.tensor([[float("nan"), 1.0]]),
    )
    return Batch.from_data_list([g1, g2])


def test_config_lists_exactly_the_registered_encoders():
    assert list(encoder_names()) == sorted(ENCODERS)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_every_encoder_gives_one_output_per_graph_and_task(encoder):
    model = build_model(_spec(encoder), seed=0)
    out = model.forward_batch(_batch())
    assert out.shape == (2, 2)
    pred = model.predict(_batch())
    assert ((pred[:, 1] > 0) & (pred[:, 1] < 1)).all()  # classification column is a probability


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_seeded_init_is_reproducible_and_weights_roundtrip(encoder):
    a, b = build_model(_spec(encoder), seed=3), build_model(_spec(encoder), seed=3)
    wa, wb = get_weights(a), get_weights(b)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    c = build_model(_spec(encoder), seed=4)
    set_weights(c, wa)
    batch = _batch()
    c.eval(), a.eval()
    assert torch.equal(c.forward_batch(batch), a.forward_batch(batch))


def test_seeded_builds_in_concurrent_threads_match_serial_builds():
    """Partners of one process build their (private-head) models in threads at once; each must get its seed's
    weights, not a mix of draws (it did: the private-heads federation depended on thread timing)."""
    spec = _spec("gine")
    seeds = list(range(8))
    serial = {s: get_weights(build_model(spec, seed=s)) for s in seeds}
    start = threading.Barrier(len(seeds))

    def build(seed: int):
        start.wait()
        return seed, get_weights(build_model(spec, seed=seed))

    for _ in range(3):
        with ThreadPoolExecutor(len(seeds)) as pool:
            for seed, weights in pool.map(build, seeds):
                assert all(np.array_equal(weights[k], serial[seed][k]) for k in weights), f"seed {seed}"


def test_target_scaling_is_not_federated_and_inverts():
    model = build_model(_spec("gine", ("a",), ("regression",)), seed=0)
    assert "target_mean" not in get_weights(model)
    model.set_target_scaling([10.0], [2.0])
    y = torch.tensor([[14.0]])
    assert torch.allclose(model.scale_targets(y), torch.tensor([[2.0]]))
    assert torch.allclose(model.to_predictions(torch.tensor([[2.0]])), y)


def test_unknown_encoder_lists_choices():
    with pytest.raises(ValueError, match=r"unknown encoder 'gin'; choose from \['attentivefp', 'gine'\]"):
        build_model(_spec("gin"))
