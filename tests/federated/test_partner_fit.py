"""Partner-side strategy support: FedProx's proximal term, SCAFFOLD's corrected steps and workspace state,
q-FedAvg's loss before training, and the fit-option protocol of ``local_update``."""

import numpy as np
import pytest
import torch
from rdkit import Chem

from molfed.chem.featurize import mol_to_graph
from molfed.federated import partner as p
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.partner_state import load_state, save_state, state_path
from molfed.federated.scaffold import STATE_NAME
from molfed.federated.strategies import build_strategy
from molfed.federated.types import LOSS_BEFORE, SCAFFOLD_C, SCAFFOLD_DELTA_C
from molfed.federated.weights import get_weights
from molfed.train.local import evaluate, full_gradient, train_local

SMILES = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCN(CC)CC", "CC(C)Cc1ccc(C)cc1", "OC1CCCCC1", "CCCCCl", "CC#N"]
LABELS = [-5.0, -9.9, -6.6, -3.2, -0.5, -5.5, -0.1, -3.9]
SPEC = model_spec(
    encoder="gine",
    hidden_channels=16,
    num_layers=2,
    dropout=0.0,
    readout="mean",
    head_layers=2,
    task_names=["y"],
    task_types=["regression"],
)
SCALING = {"mean": [-4.3], "std": [3.0]}
SETTINGS = p.TrainSettings(epochs=2, batch_size=4, lr=1e-2)


def _graphs():
    return tuple(mol_to_graph(Chem.MolFromSmiles(s), [y]) for s, y in zip(SMILES, LABELS, strict=True))


def _partner(workspace=None) -> p.PartnerData:
    graphs = _graphs()
    summary = p.PartnerSummary("a", "digest", 8, 8, 6, 1, 1, 0)
    return p.PartnerData("a", {"train": graphs[:6], "val": graphs[6:7], "test": graphs[7:]}, summary, workspace)


def _model():
    return p.materialize(SPEC, initial_weights(SPEC, 0), SCALING)


def _distance(model, start) -> float:
    return float(
        sum(((torch.from_numpy(start[k]) - v) ** 2).sum() for k, v in model.state_dict().items() if k in start)
    )


def test_proximal_term_keeps_local_weights_closer_to_the_global_model():
    start = initial_weights(SPEC, 0)
    distances = []
    for mu in (0.0, 1.0, 10.0):  # lr * mu < 2: SGD on the proximal term stays stable
        model = _model()
        result = train_local(model, _graphs(), epochs=3, batch_size=4, optimizer="sgd", lr=0.05, proximal_mu=mu)
        assert np.isfinite(result.loss)
        distances.append(_distance(model, start))
    assert distances[0] > distances[1] > distances[2] > 0


def test_proximal_gradient_is_mu_times_the_distance_to_the_start():
    # Two SGD steps on one batch: step 1 starts at the anchor (prox gradient 0); the second step's extra pull is
    # lr * mu * (w1 - w0). So w2(mu) - w2(0) = -lr * mu * (w1 - w0) exactly, w1 being identical for both.
    graphs, lr, mu = _graphs()[:4], 0.05, 0.5
    w0 = get_weights(_model())
    one = _model()
    train_local(one, graphs, epochs=1, batch_size=4, optimizer="sgd", lr=lr)
    w1 = get_weights(one)
    plain, prox = _model(), _model()
    train_local(plain, graphs, epochs=2, batch_size=4, optimizer="sgd", lr=lr)
    train_local(prox, graphs, epochs=2, batch_size=4, optimizer="sgd", lr=lr, proximal_mu=mu)
    a, b = get_weights(plain), get_weights(prox)
    for k in w0:
        np.testing.assert_allclose(b[k] - a[k], -lr * mu * (w1[k] - w0[k]), atol=1e-6)


def test_gradient_correction_shifts_an_sgd_step_by_lr_times_the_correction():
    graphs, lr = _graphs()[:4], 0.1
    correction = {k: torch.full(v.shape, 0.25) for k, v in initial_weights(SPEC, 0).items()}
    plain, corrected = _model(), _model()
    train_local(plain, graphs, epochs=1, batch_size=4, optimizer="sgd", lr=lr)
    train_local(corrected, graphs, epochs=1, batch_size=4, optimizer="sgd", lr=lr, grad_correction=correction)
    a, b = get_weights(plain), get_weights(corrected)
    for k in a:
        np.testing.assert_allclose(b[k] - a[k], -lr * 0.25, atol=1e-6)


def test_full_gradient_does_not_depend_on_batching_and_leaves_weights_alone():
    model = _model()
    before = get_weights(model)
    whole = full_gradient(model, _graphs(), batch_size=256)
    batched = full_gradient(model, _graphs(), batch_size=3)
    assert set(whole) == set(before)
    assert any(np.abs(g).sum() > 0 for g in whole.values())
    for k in whole:
        np.testing.assert_allclose(batched[k], whole[k], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(get_weights(model)[k], before[k])


def test_partner_state_round_semantics(tmp_path):
    ref = {"w": np.zeros((2, 3), np.float32)}
    ones, twos = {"w": np.ones((2, 3), np.float32)}, {"w": np.full((2, 3), 2.0, np.float32)}
    assert np.array_equal(load_state(tmp_path, "run/1", "c", 1, ref)["w"], ref["w"])  # nothing saved: zeros
    path = save_state(tmp_path, "run/1", "c", 3, twos, ones)
    assert path == state_path(tmp_path, "run/1", "c") and path.parent.name == "run_1"
    assert np.array_equal(load_state(tmp_path, "run/1", "c", 5, ref)["w"], twos["w"])  # later round: new state
    assert np.array_equal(load_state(tmp_path, "run/1", "c", 3, ref)["w"], ones["w"])  # retried round: old state
    assert np.array_equal(load_state(tmp_path, "run/1", "c", 2, ref)["w"], ref["w"])  # from a later round: zeros
    assert np.array_equal(load_state(tmp_path, "run/1", "c", 5, {"v": np.zeros(2, np.float32)})["v"], [0, 0])
    assert np.array_equal(load_state(tmp_path, "run/2", "c", 5, ref)["w"], ref["w"])  # another federation


def test_scaffold_local_update_keeps_c_i_in_the_workspace(tmp_path):
    data, weights = _partner(tmp_path / "ws"), initial_weights(SPEC, 0)
    strategy = build_strategy("scaffold")
    kwargs = {"spec": SPEC, "scaling": SCALING, "settings": SETTINGS, "seed": 1, "state_key": "run-1"}
    first = p.local_update(
        data, weights=weights, fit_tensors=strategy.fit_tensors(1, weights), server_round=1, **kwargs
    )
    # round 1: c = c_i = 0, so the step is plain training and c_i+ is the gradient at the received weights
    plain = p.local_update(data, weights=weights, **kwargs)
    for k in weights:
        np.testing.assert_array_equal(first.weights[k], plain.weights[k])
    gradient = full_gradient(p.materialize(SPEC, weights, SCALING), data.splits["train"])
    for k in weights:
        np.testing.assert_allclose(first.extras[SCAFFOLD_DELTA_C][k], gradient[k], rtol=1e-5, atol=1e-7)
    assert state_path(tmp_path / "ws", "run-1", STATE_NAME).exists()
    assert plain.extras == {}

    new = strategy.run_round(1, weights, [first]).weights
    second = p.local_update(data, weights=new, fit_tensors=strategy.fit_tensors(2, new), server_round=2, **kwargs)
    # delta = c_i(round 2) - c_i(round 1): the saved c_i was used as the starting point
    gradient2 = full_gradient(p.materialize(SPEC, new, SCALING), data.splits["train"])
    for k in weights:
        np.testing.assert_allclose(second.extras[SCAFFOLD_DELTA_C][k], gradient2[k] - gradient[k], atol=1e-6)
    assert any(not np.array_equal(second.weights[k], new[k]) for k in new)


def test_scaffold_without_a_workspace_or_with_wrong_shapes_is_an_error(tmp_path):
    weights = initial_weights(SPEC, 0)
    tensors = build_strategy("scaffold").fit_tensors(1, weights)
    with pytest.raises(
        ValueError, match="partner a: SCAFFOLD keeps partner state between rounds, but no workspace was given"
    ):
        p.local_update(
            _partner(), spec=SPEC, weights=weights, scaling=SCALING, settings=SETTINGS, seed=0, fit_tensors=tensors
        )
    bad = {SCAFFOLD_C: {k: v[..., :1] for k, v in tensors[SCAFFOLD_C].items()}}
    with pytest.raises(ValueError, match="partner a: fit tensors 'scaffold_c': tensor"):
        p.local_update(
            _partner(),
            spec=SPEC,
            weights=weights,
            scaling=SCALING,
            settings=SETTINGS,
            seed=0,
            fit_tensors=bad,
            workspace=tmp_path,
        )


def test_qfedavg_partners_report_the_received_models_training_loss():
    data, weights = _partner(), initial_weights(SPEC, 0)
    options = build_strategy("qfedavg").fit_options(1)
    update = p.local_update(
        data, spec=SPEC, weights=weights, scaling=SCALING, settings=SETTINGS, seed=0, fit_options=options
    )
    expected = evaluate(p.materialize(SPEC, weights, SCALING), data.splits["train"])["loss"]
    assert update.metrics[LOSS_BEFORE] == pytest.approx(expected)
    assert (
        LOSS_BEFORE
        not in p.local_update(data, spec=SPEC, weights=weights, scaling=SCALING, settings=SETTINGS, seed=0).metrics
    )


def test_fedprox_option_reaches_training_and_unknown_options_are_refused():
    data, weights = _partner(), initial_weights(SPEC, 0)
    kwargs = {"spec": SPEC, "weights": weights, "scaling": SCALING, "settings": SETTINGS, "seed": 0}
    plain = p.local_update(data, **kwargs)
    via_option = p.local_update(data, fit_options=build_strategy("fedprox", proximal_mu=10.0).fit_options(1), **kwargs)
    via_argument = p.local_update(data, proximal_mu=10.0, **kwargs)
    assert any(not np.array_equal(plain.weights[k], via_option.weights[k]) for k in weights)
    for k in weights:
        np.testing.assert_array_equal(via_option.weights[k], via_argument.weights[k])
    with pytest.raises(ValueError, match=r"unknown fit option\(s\) \['momentum'\]"):
        p.local_update(data, fit_options={"momentum": 0.9}, **kwargs)
