"""Sample-level DP-SGD: per-graph gradients, clipping bounds each molecule's contribution, noise scale, training."""

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from molfed.chem.featurize import mol_to_graph
from molfed.federated import partner as p
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.weights import get_weights
from molfed.models.model import build_model
from molfed.privacy import DP_MAX_GRAD_NORM, DP_NOISE_MULTIPLIER, DP_NOISE_SEED
from molfed.privacy.dpsgd import (
    DPSGDSettings,
    add_noise,
    clip_and_sum,
    dp_settings_from_options,
    per_graph_losses,
    per_sample_gradients,
    sampling,
)
from molfed.train.local import train_local

SMILES = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCN(CC)CC", "CC(C)Cc1ccc(C)cc1", "OC1CCCCC1", "CCCCCl", "CC#N"]
LABELS = [-5.0, -9.9, -6.6, -3.2, -0.5, -5.5, -0.1, -3.9]


def _spec(encoder="gine"):
    return model_spec(
        encoder=encoder,
        hidden_channels=16,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["y"],
        task_types=["regression"],
    )


def _graphs(labels=LABELS):
    return [mol_to_graph(Chem.MolFromSmiles(s), [y]) for s, y in zip(SMILES, labels, strict=True)]


@pytest.mark.parametrize("encoder", ["gine", "attentivefp"])
def test_per_sample_gradients_equal_each_graph_alone(encoder):
    model = build_model(_spec(encoder), seed=0)
    graphs = _graphs()
    grads, losses = per_sample_gradients(model, Batch.from_data_list(graphs))
    for i, graph in enumerate(graphs):
        model.zero_grad()
        one = Batch.from_data_list([graph])
        per_graph_losses(model.forward_batch(one), model.scale_targets(one.y), model.is_classification).sum().backward()
        for g, param in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(g[i], param.grad, atol=1e-5, rtol=1e-4)
    assert losses.shape == (len(graphs),)


def _clipped_sum(model, graphs, bound):
    grads, norms = per_sample_gradients(model, Batch.from_data_list(graphs))[0], None
    summed, norms = clip_and_sum(grads, bound)
    return torch.cat([s.flatten() for s in summed]), norms


def test_clipping_bounds_one_molecules_contribution_and_would_fail_without_it():
    model = build_model(_spec(), seed=0)
    outlier = [*LABELS[:-1], 1e4]  # the last molecule's label is absurd: a huge gradient
    base, _ = _clipped_sum(model, _graphs(), 0.5)
    moved, norms = _clipped_sum(model, _graphs(outlier), 0.5)
    assert norms[-1] > 100  # the outlier's raw gradient is far above the bound
    assert float((moved - base).norm()) <= 2 * 0.5 + 1e-4  # replace-one sensitivity 2C
    unclipped_base, _ = _clipped_sum(model, _graphs(), 1e9)
    unclipped_moved, _ = _clipped_sum(model, _graphs(outlier), 1e9)
    assert float((unclipped_moved - unclipped_base).norm()) > 100  # the bound is what holds it


def test_each_clipped_gradient_has_norm_at_most_the_bound():
    grads = [torch.randn(5, 3, 4) * 10, torch.randn(5, 7)]
    summed, norms = clip_and_sum(grads, 1.0)
    single = [clip_and_sum([g[i : i + 1] for g in grads], 1.0)[0] for i in range(5)]
    for parts, n in zip(single, norms, strict=True):
        assert float(torch.cat([x.flatten() for x in parts]).norm()) == pytest.approx(min(1.0, float(n)), rel=1e-5)
    small = [g * 1e-6 for g in grads]  # below the bound: untouched
    torch.testing.assert_close(clip_and_sum(small, 1.0)[0][1], small[1].sum(0))


def test_noise_has_std_sigma_times_bound_over_denominator():
    settings = DPSGDSettings(noise_multiplier=2.0, max_grad_norm=0.5, noise_seed=1)
    zeros = [torch.zeros(200_000)]
    noisy = add_noise(zeros, settings, 4.0, torch.Generator().manual_seed(0))[0]
    assert float(noisy.std()) == pytest.approx(2.0 * 0.5 / 4.0, rel=0.02)
    assert abs(float(noisy.mean())) < 0.01


def test_sampling_rate_and_steps():
    assert sampling(256, 32) == (0.125, 8)
    assert sampling(10, 32) == (1.0, 1)
    with pytest.raises(ValueError):
        sampling(0, 32)


def test_dp_training_is_reproducible_with_a_noise_seed_and_not_without():
    graphs = _graphs()
    spec = _spec()

    def run(settings):
        model = p.materialize(spec, initial_weights(spec, 0), {"mean": [-4.3], "std": [3.0]})
        result = train_local(model, graphs, epochs=2, batch_size=4, lr=1e-2, seed=3, dp=settings)
        return result, get_weights(model)

    (r1, w1), (_, w2) = run(DPSGDSettings(1.0, 1.0, 7)), run(DPSGDSettings(1.0, 1.0, 7))
    _, w3 = run(DPSGDSettings(1.0, 1.0, 8))
    _, w4 = run(DPSGDSettings(1.0, 1.0, None))
    assert r1.steps == 2 * 2 and np.isfinite(r1.loss)
    assert all(np.array_equal(w1[n], w2[n]) for n in w1)
    assert not all(np.array_equal(w1[n], w3[n]) for n in w1)
    assert not all(np.array_equal(w1[n], w4[n]) for n in w1)


def test_local_update_runs_dp_sgd_from_fit_options():
    graphs = tuple(_graphs())
    data = p.PartnerData("a", {"train": graphs, "val": graphs[:2], "test": graphs[:2]}, summary=None)  # type: ignore[arg-type]
    spec = _spec()
    kwargs = dict(
        spec=spec,
        weights=initial_weights(spec, 0),
        scaling={"mean": [-4.3], "std": [3.0]},
        settings=p.TrainSettings(epochs=1, batch_size=4, lr=1e-2),
        seed=1,
    )
    plain = p.local_update(data, **kwargs)
    noisy = p.local_update(data, **kwargs, fit_options={DP_NOISE_MULTIPLIER: 50.0, DP_MAX_GRAD_NORM: 1.0})
    seeded = p.local_update(
        data, **kwargs, fit_options={DP_NOISE_MULTIPLIER: 50.0, DP_MAX_GRAD_NORM: 1.0, DP_NOISE_SEED: 3.0}
    )
    again = p.local_update(
        data, **kwargs, fit_options={DP_NOISE_MULTIPLIER: 50.0, DP_MAX_GRAD_NORM: 1.0, DP_NOISE_SEED: 3.0}
    )
    assert not all(np.array_equal(plain.weights[n], noisy.weights[n]) for n in plain.weights)
    assert all(np.array_equal(seeded.weights[n], again.weights[n]) for n in seeded.weights)


def test_dp_options_are_checked():
    assert dp_settings_from_options({}) is None
    assert dp_settings_from_options({DP_NOISE_MULTIPLIER: 1.0, DP_MAX_GRAD_NORM: 2.0}) == DPSGDSettings(1.0, 2.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        dp_settings_from_options({DP_NOISE_MULTIPLIER: 1.0})
