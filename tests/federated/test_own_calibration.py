"""A partner's own calibration of its exported model (shared + private tasks), computed from its own data only."""

import json

import numpy as np
import pytest
from rdkit import Chem

from molfed.chem.featurize import mol_to_graph
from molfed.chem.standardize import StandardizeOptions
from molfed.federated import calibration as cal
from molfed.federated import conformal as cf
from molfed.federated import jobs
from molfed.federated import partner as p
from molfed.federated import private_heads as ph
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.own_calibration import own_calibration
from molfed.serving import predict_smiles

SMILES = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCN(CC)CC", "CC(C)Cc1ccc(C)cc1", "OC1CCCCC1", "CCCCCl", "CC#N"]
SHARED = [-5.0, -9.9, np.nan, -3.2, -0.5, -5.5, -0.1, -3.9]
PRIV_REG = [120.0, 180.0, 94.0, 101.0, np.nan, 100.0, 92.0, 41.0]
PRIV_CLS = [0.0, 1.0, 1.0, 0.0, 1.0, np.nan, 0.0, 1.0]
SPEC = model_spec(
    encoder="gine", hidden_channels=16, num_layers=2, dropout=0.0, readout="mean", head_layers=2,
    task_names=["y"], task_types=["regression"],
)  # fmt: skip
SCALING = {"mean": [-4.3], "std": [3.0]}
PRIVATE = (ph.PrivateTask("mp", "regression", "mp"), ph.PrivateTask("active", "classification", "active"))
LEVELS = (0.6, 0.9)  # 5 calibration labels per task: bounded at 60 % (rank 4 of 5), unbounded at 90 % (rank 6 of 5)


def _partner(workspace, *, has_shared: bool = True) -> p.PartnerData:
    columns = ([SHARED] if has_shared else []) + [PRIV_REG, PRIV_CLS]
    graphs = tuple(mol_to_graph(Chem.MolFromSmiles(s), [c[i] for c in columns]) for i, s in enumerate(SMILES))
    layout = ph.TaskLayout(1, has_shared, PRIVATE, head_seed=7)
    splits = {"train": graphs[:6], "val": graphs[6:7], "test": graphs[7:], "cal": graphs[2:8]}
    summary = p.PartnerSummary("a", "digest", 8, 8, 6, 1, 1, 0)
    return p.PartnerData("a", splits, summary, workspace, layout, StandardizeOptions())


def _model(data):
    return p.private_model(data, spec=SPEC, weights=initial_weights(SPEC, 0), scaling=SCALING, state_key="run")


def test_own_calibration_is_split_conformal_on_the_partners_own_calibration_split(tmp_path):
    data = _partner(tmp_path)
    model = _model(data)
    c = own_calibration(model, data, levels=LEVELS, domain_level=0.8)
    assert c.method == "mondrian" and c.levels == LEVELS
    assert [(t.name, t.type, t.n) for t in c.tasks] == [
        ("y", "regression", 5),
        ("mp", "regression", 5),
        ("active", "classification", 5),
    ]  # missing labels left out task by task
    y, _, pred, _ = cal.outputs(model, data.splits["cal"])
    std = model.target_std.tolist()
    for i in (0, 1):  # half-width = the exact split-conformal quantile rounded up to its bin (0.005 std)
        exact = cf.sample_quantile(np.abs(y[:, i] - pred[:, i]) / std[i], 0.6)
        width = c.tasks[i].half_widths[0]
        assert exact is not None and width is not None
        assert exact * std[i] <= width <= (exact + 0.005 + 1e-9) * std[i]
        assert c.tasks[i].half_widths[1] is None  # too few labels for 90 %: unbounded, as in the federated path
    assert c.tasks[1].half_widths[0] > 1.0  # in the private task's own units (its std, not the shared one)
    assert c.tasks[2].temperature is not None and len(c.tasks[2].include_1_from) == 2

    _, _, _, h = cal.outputs(model, data.splits["train"])  # the domain: its own training embeddings' moments
    assert c.domain is not None
    np.testing.assert_allclose(c.domain.mean, h.mean(axis=0))


def test_private_only_partner_calibrates_its_private_columns(tmp_path):
    data = _partner(tmp_path, has_shared=False)
    c = own_calibration(_model(data), data, levels=LEVELS, domain_level=0.8)
    assert [(t.name, t.n) for t in c.tasks] == [("mp", 5), ("active", 5)]


def test_finish_exports_the_partners_own_calibration_and_reports_none_of_it(tmp_path):
    data = _partner(tmp_path)
    options = jobs.PrivateOptions(calibration_levels=LEVELS, domain_level=0.8)
    report = jobs.finish_job(
        data, spec=SPEC, weights=initial_weights(SPEC, 0), scaling=SCALING, parity_task=None, parity_edges=[],
        state_key="run", private=options,
    )  # fmt: skip
    model, info = ph.load_exported_model(jobs.model_dir(tmp_path, "run"))
    calibration = ph.exported_calibration(info)
    assert calibration == own_calibration(_model(data), data, levels=LEVELS, domain_level=0.8)
    frame = predict_smiles(model, ["CCO", "CCCO", "nope"], standardize=StandardizeOptions(), calibration=calibration)
    for column in ("mp_lower_60", "mp_upper_90", "y_lower_60", "active_set_60", "active_probability", "in_domain"):
        assert column in frame.columns
    assert np.isfinite(frame["mp_lower_60"][:2]).all() and np.isinf(frame["mp_upper_90"][:2]).all()
    assert "calibration" not in json.dumps(report.to_json())  # the final report carries nothing of it

    # calibration off in the run: no levels, no calibration
    jobs.finish_job(
        data, spec=SPEC, weights=initial_weights(SPEC, 0), scaling=SCALING, parity_task=None, parity_edges=[],
        state_key="off",
    )  # fmt: skip
    _, info = ph.load_exported_model(jobs.model_dir(tmp_path, "off"))
    assert "calibration" not in info and ph.exported_calibration(info) is None


@pytest.mark.parametrize("enabled", [None, False])
def test_the_run_configs_calibration_switch_decides(tmp_path, monkeypatch, enabled):
    """The adapter asks for the partner's own calibration exactly when the run calibrates (local mode: by default;
    ``calibration.enabled: false`` turns both off)."""
    from tasks import partner as tp

    asked = []
    monkeypatch.setattr(tp, "load_partner", lambda config, cfg: None)
    monkeypatch.setattr(tp.jobs, "finish_job", lambda data, **kwargs: asked.append(kwargs["private"]))
    config = _run_config(tmp_path, enabled)
    tp.finish_from_config(config, "alpha", SPEC, {}, SCALING, None, [], None, "run")
    (options,) = asked
    assert options.calibration_levels == ((0.8, 0.9, 0.95) if enabled is None else ())
    assert options.domain_level == config.calibration.domain_level


def _run_config(tmp_path, enabled):
    import yaml

    from molfed.config import load_config

    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "tasks": [{"name": "expt"}],
                "partners": [{"name": "alpha", "path": str(tmp_path / "a.csv"), "private_tasks": [{"name": "logp"}]}],
                "baselines": {"pooled": False},
                **({} if enabled is None else {"calibration": {"enabled": enabled}}),
            }
        )
    )
    return load_config(path)
