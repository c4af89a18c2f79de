"""What leaves a partner for calibration (issue 18): sums of a fixed shape, never per-molecule values; under secure
aggregation nothing in the clear, and the secure sum equals the plain one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from molfed.config import load_config
from molfed.data.demo import partner_overrides, write_demo_partners
from molfed.federated import calibration as cal
from molfed.federated import conformal as cf
from molfed.federated import coordinator as coord
from molfed.federated.secure.local import held_rounds
from tasks import calibration as cal_t
from tasks import partner as tp

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("calleak")
    paths = write_demo_partners(root / "data", seed=0)
    overrides = [*partner_overrides(paths, root / "ws"), "model.hidden_channels=8", "model.num_layers=1"]
    plain = load_config(REPO / "configs" / "demo.yaml", overrides)
    secure = load_config(REPO / "configs" / "demo.yaml", [*overrides, "secure_aggregation.enabled=true"])
    m = plain.model
    spec = coord.model_spec(
        **m.model_dump(), task_names=[t.name for t in plain.tasks], task_types=[t.type for t in plain.tasks]
    )
    weights = coord.initial_weights(spec, 0)
    scaling = {"mean": [-4.0], "std": [3.0]}
    return plain, secure, spec, weights, scaling


def test_calibration_replies_have_a_fixed_shape_whatever_the_partners_size(setup):
    plain, _, spec, weights, scaling = setup
    sizes, domain = {}, None
    for step in ("moments", "scores"):
        layout = (
            cal.moments_layout(spec) if step == "moments" else cf.sums_layout(["expt"], ["regression"], domain=True)
        )
        total = {}
        for p in plain.partners:
            data = tp.partner_data(plain, p.name)
            sizes[p.name] = len(data.splits["train"])
            reply = tp.calibrate(plain, p.name, step, spec, weights, scaling, {"domain": domain}, "run")
            assert {k: v.shape for k, v in reply.items()} == layout  # no array grows with the molecules
            total[p.name] = reply
        if step == "moments":
            summed = cf.add_sums(total.values())
            domain = cf.embedding_stats(float(summed["n"][0]), summed["sum"], summed["outer"])
        else:
            for reply in total.values():  # histogram counts only
                assert all(np.array_equal(v, np.round(v)) and (v >= 0).all() for v in reply.values())
    assert len(set(sizes.values())) == len(sizes)  # partners of different sizes gave the same shapes


def test_under_secure_aggregation_replies_carry_nothing_and_the_secure_sum_is_the_plain_sum(setup):
    plain, secure, spec, weights, scaling = setup
    names = [p.name for p in plain.partners]
    clear = {n: tp.calibrate(plain, n, "moments", spec, weights, scaling, {}, "run-a") for n in names}
    masked = {n: tp.calibrate(secure, n, "moments", spec, weights, scaling, {}, "run-b") for n in names}
    assert all(r is None for r in masked.values())  # the coordinator received no sums in the clear
    assert len(held_rounds(cal.secure_key("run-b", "moments"))) == len(names)
    total = cal_t.summer(secure, "run-b")("moments", masked, cal.moments_layout(spec))
    expected = cf.add_sums(clear.values())
    assert total["n"][0] == expected["n"][0]
    assert np.allclose(total["sum"], expected["sum"], atol=1e-3) and np.allclose(
        total["outer"], expected["outer"], atol=1e-3
    )
    assert held_rounds(cal.secure_key("run-b", "moments")) == []  # masked, summed and dropped


def test_sites_mode_calibrates_only_when_asked_and_validates_levels():
    """Sites mode calibrates through the sites' opt-in ``calibrate`` job (tests/site/test_calibrate.py): off unless the
    config turns it on, so a federation does not fail at its end on sites whose policy does not list the job."""
    from molfed.config import parse_config

    raw = {
        "mode": "sites",
        "tasks": [{"name": "expt"}],
        "partners": [{"name": "a"}, {"name": "b"}],
        "baselines": {"pooled": False},
    }
    config = parse_config(raw, source="test")
    assert not config.calibration.active(config.mode)
    on = parse_config({**raw, "calibration": {"enabled": True}}, source="test")
    assert on.calibration.active(on.mode)
    with pytest.raises(Exception, match="calibration.levels"):
        parse_config({**raw, "calibration": {"levels": [0.9, 1.0]}}, source="test")
