"""Shared trunk + private heads: the model split, the update contract for differing key sets, and the partner side
(head kept in the workspace, never in an update; own target scaling; export)."""

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from molfed.chem.featurize import mol_to_graph
from molfed.federated import jobs
from molfed.federated import partner as p
from molfed.federated import private_heads as ph
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.strategies import STRATEGIES, build_strategy
from molfed.federated.types import LOSS_BEFORE, SCAFFOLD_DELTA_C, Update
from molfed.federated.weights import get_weights
from molfed.models.model import ModelSpec, build_model

SMILES = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCN(CC)CC", "CC(C)Cc1ccc(C)cc1", "OC1CCCCC1", "CCCCCl", "CC#N"]
SHARED = [-5.0, -9.9, np.nan, -3.2, -0.5, -5.5, -0.1, -3.9]  # one shared label missing
PRIV_REG = [120.0, 180.0, 94.0, 101.0, np.nan, 100.0, 92.0, 41.0]  # far from the shared scale: own scaling needed
PRIV_CLS = [0.0, 1.0, 1.0, 0.0, 1.0, np.nan, 0.0, 1.0]
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
PRIVATE = (ph.PrivateTask("mp", "regression", "mp"), ph.PrivateTask("active", "classification", "active"))


def _partner(workspace, *, has_shared: bool = True) -> p.PartnerData:
    columns = ([SHARED] if has_shared else []) + [PRIV_REG, PRIV_CLS]
    graphs = tuple(mol_to_graph(Chem.MolFromSmiles(s), [c[i] for c in columns]) for i, s in enumerate(SMILES))
    summary = p.PartnerSummary("a", "digest", 8, 8, 6, 1, 1, 0)
    layout = ph.TaskLayout(1, has_shared, PRIVATE, head_seed=7)
    splits = {"train": graphs[:6], "val": graphs[6:7], "test": graphs[7:]}
    return p.PartnerData("a", splits, summary, workspace, layout)


def _round(data, weights, server_round, key="run"):
    return p.local_update(
        data, spec=SPEC, weights=weights, scaling=SCALING, settings=SETTINGS, seed=1, server_round=server_round,
        state_key=key,
    )  # fmt: skip


def test_model_spec_splits_shared_and_private_heads():
    spec = ph.partner_spec(SPEC, ph.TaskLayout(1, True, PRIVATE))
    assert spec.task_names == ("y", "mp", "active") and spec.n_shared_tasks == 1 and spec.n_private_tasks == 2
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    model = build_model(spec, seed=0)
    names = set(get_weights(model))
    assert any(n.startswith("head.") for n in names) and any(n.startswith("private_head.") for n in names)
    batch = Batch.from_data_list([mol_to_graph(Chem.MolFromSmiles(s)) for s in SMILES[:3]])
    assert model.forward_batch(batch).shape == (3, 3)
    assert set(ph.shared_weights(get_weights(model))) == set(initial_weights(SPEC, 0))  # same trunk + shared head


def test_partner_without_shared_tasks_has_no_shared_head():
    model = build_model(ph.partner_spec(SPEC, ph.TaskLayout(1, False, PRIVATE)), seed=0)
    assert model.head is None
    assert not any(n.startswith("head.") for n in get_weights(model))
    batch = Batch.from_data_list([mol_to_graph(Chem.MolFromSmiles(s)) for s in SMILES[:2]])
    assert model.forward_batch(batch).shape == (2, 2)


def test_update_carries_trunk_and_shared_head_only_and_head_persists_in_workspace(tmp_path):
    data, w0 = _partner(tmp_path), initial_weights(SPEC, 0)
    first = _round(data, w0, 1)
    assert set(first.weights) == set(w0)  # trunk + shared head, no private tensor
    assert first.extras == {}
    head1 = ph.load_head(tmp_path, "run", 2)
    assert head1 and all(n.startswith("private_head.") for n in head1)
    initial = ph.private_weights(get_weights(build_model(ph.partner_spec(SPEC, data.layout), seed=7)))
    assert any(not np.array_equal(head1[n], initial[n]) for n in head1)  # the head trained

    again = _round(data, w0, 1)  # a retried round starts from the same head: same result
    for n in first.weights:
        np.testing.assert_array_equal(again.weights[n], first.weights[n])
    second = _round(data, first.weights, 2)
    head2 = ph.load_head(tmp_path, "run", 3)
    assert any(not np.array_equal(head2[n], head1[n]) for n in head2)  # round 2 continued from round 1's head
    assert set(second.weights) == set(w0)


def test_partner_with_private_tasks_only_sends_trunk_only(tmp_path):
    data, w0 = _partner(tmp_path, has_shared=False), initial_weights(SPEC, 0)
    update = _round(data, w0, 1)
    assert set(update.weights) == {n for n in w0 if not n.startswith("head.")}
    assert p.partner_label_moments(data) == {"count": [0.0], "sum": [0.0], "sumsq": [0.0]}
    assert p.evaluate_partner(data, spec=SPEC, weights=w0, scaling=SCALING, splits=("val",)) == {"val": {}}


def test_private_scaling_comes_from_own_training_labels_and_never_travels(tmp_path):
    data = _partner(tmp_path)
    model = p.private_model(data, spec=SPEC, weights=initial_weights(SPEC, 0), scaling=SCALING, state_key="run")
    train_mp = np.array(PRIV_REG[:6])
    train_mp = train_mp[~np.isnan(train_mp)]
    np.testing.assert_allclose(model.target_mean.numpy(), [-4.3, train_mp.mean(), 0.0], rtol=1e-5)
    np.testing.assert_allclose(model.target_std.numpy(), [3.0, train_mp.std(), 1.0], rtol=1e-5)
    shared = np.array(SHARED[:6])
    moments = p.partner_label_moments(data)
    assert moments["count"] == [float((~np.isnan(shared)).sum())]  # shared task only: no private statistics


def test_finish_exports_a_loadable_model_that_predicts_private_tasks(tmp_path):
    data, w0 = _partner(tmp_path), initial_weights(SPEC, 0)
    weights = _round(data, w0, 1).weights
    report = jobs.finish_job(
        data, spec=SPEC, weights=weights, scaling=SCALING, parity_task=0, parity_edges=[-10, 0, 10], state_key="run"
    )
    assert set(report.private) == {"val", "test"} and "rmse.mp" in report.private["test"]
    assert "rmse" in report.test and "rmse.mp" not in report.test  # shared metrics stay about shared tasks
    assert (tmp_path / "reports" / "run" / "parity_test.png").stat().st_size > 0  # the full scatter stays here
    model, info = ph.load_exported_model(jobs.model_dir(tmp_path, "run"))
    assert info["spec"]["task_names"] == ["y", "mp", "active"]
    in_process = p.private_model(data, spec=SPEC, weights=weights, scaling=SCALING, state_key="run")
    batch = Batch.from_data_list(list(data.splits["test"]))
    torch.testing.assert_close(model.predict(batch), in_process.predict(batch))
    rmse = float(abs(model.predict(batch)[0, 1] - PRIV_REG[7]))
    assert rmse == pytest.approx(report.private["test"]["rmse.mp"], rel=1e-5)

    quiet = jobs.finish_job(
        data, spec=SPEC, weights=weights, scaling=SCALING, parity_task=None, parity_edges=[], state_key="run",
        private=jobs.PrivateOptions(report_metrics=False),
    )  # fmt: skip
    assert quiet.private == {}
    assert jobs.private_metrics({"a": report})["private_test_rmse.mp.a"] == report.private["test"]["rmse.mp"]


# --- the coordinator's contract for updates with differing key sets ---------------------------------------------


def _w(seed: int, head: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"encoder.w": rng.normal(size=(2, 3)).astype(np.float32)}
    if head:
        out["head.net.0.weight"] = rng.normal(size=(3,)).astype(np.float32)
    return out


def _u(name, weights, n):
    zeros = {k: np.zeros_like(v) for k, v in weights.items()}
    return Update(name, weights, n, {LOSS_BEFORE: 1.0}, {SCAFFOLD_DELTA_C: zeros})


def test_fedavg_averages_each_tensor_over_the_partners_that_carry_it():
    current, a, b, c = _w(0), _w(1), _w(2), _w(3, head=False)
    out = build_strategy("fedavg").run_round(1, current, [_u("a", a, 1), _u("b", b, 3), _u("c", c, 4)])
    assert out.accepted == ("a", "b", "c")
    trunk = (a["encoder.w"] * 1 + b["encoder.w"] * 3 + c["encoder.w"] * 4) / 8
    head = (a["head.net.0.weight"] * 1 + b["head.net.0.weight"] * 3) / 4
    np.testing.assert_allclose(out.weights["encoder.w"], trunk, rtol=1e-6)
    np.testing.assert_allclose(out.weights["head.net.0.weight"], head, rtol=1e-6)


def test_shared_head_nobody_trained_keeps_its_value():
    current = _w(0)
    out = build_strategy("fedavg").run_round(1, current, [_u("c", _w(3, head=False), 4)])
    np.testing.assert_array_equal(out.weights["head.net.0.weight"], current["head.net.0.weight"])


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ({**_w(1), "private_head.net.0.weight": np.ones(3, np.float32)}, "unexpected ['private_head.net.0.weight']"),
        ({"head.net.0.weight": np.ones(3, np.float32)}, "missing ['encoder.w']"),
    ],
)
def test_private_heads_and_partial_trunks_are_rejected(weights, reason):
    out = build_strategy("fedavg").run_round(1, _w(0), [_u("a", _w(1), 1), _u("x", weights, 1)])
    assert out.accepted == ("a",) and reason in out.failures[0].reason


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_takes_trunk_only_updates(name):
    """Where all partners agree, every strategy keeps the agreed trunk and the carriers' head (server optimizers
    and q-FedAvg excepted, which do not return the average); the result always has every tensor, finite."""
    current = _w(0)
    agreed = _w(1)
    trunk_only = {"encoder.w": agreed["encoder.w"]}
    updates = [_u("a", agreed, 2), _u("b", dict(agreed), 3), _u("c", trunk_only, 5)]
    out = build_strategy(name).run_round(1, current, updates).weights
    assert set(out) == set(current) and all(np.isfinite(v).all() for v in out.values())
    if name not in ("fedadam", "fedyogi", "fedadagrad", "qfedavg"):
        for key in current:
            np.testing.assert_allclose(out[key], agreed[key], rtol=1e-5, atol=1e-6)


def test_shared_tasks_a_library_lacks_become_missing_label_columns():
    g = mol_to_graph(Chem.MolFromSmiles("CCO"), [1.5, 7.0])  # shared task 'b' (column 'b'), then a private task
    (out,) = p._with_missing_columns([g], [None, "b"])
    assert out.y.shape == (1, 3)
    assert np.isnan(out.y[0, 0]) and out.y[0, 1] == 1.5 and out.y[0, 2] == 7.0
    assert g.y.shape == (1, 2)  # the cached graph is untouched
