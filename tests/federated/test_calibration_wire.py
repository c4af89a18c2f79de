"""Calibration messages of sites mode survive JSON exactly, and a malformed reply or payload is refused."""

import json

import numpy as np
import pytest

from molfed.federated import calibration_wire as wire
from molfed.federated import conformal as cf

D = 4


def _calibration() -> cf.Calibration:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    stats = cf.EmbeddingStats(rng.normal(size=D), a @ a.T + np.eye(D))
    sums = {"res:y": np.r_[np.full(50, 2.0), np.zeros(len(cf.RESIDUAL_EDGES) - 50)]}
    sums["domain"] = np.r_[np.full(30, 3.0), np.zeros(len(cf.DOMAIN_EDGES) - 30)]
    return cf.build_calibration(
        sums,
        task_names=["y"],
        task_types=["regression"],
        std=[2.0],
        levels=[0.8, 0.9],
        method="federated",
        domain=stats,
    )


def _through_json(obj):
    return json.loads(json.dumps(obj))


def test_payloads_round_trip_through_json():
    calibration = _calibration()
    assert calibration.domain is not None
    measure = wire.payload_from_json(
        "measure", _through_json(wire.payload_to_json("measure", {"calibration": calibration})), width=D
    )
    assert measure == {"calibration": calibration, "domain_level": 0.95}
    stats = calibration.domain.stats()
    scores = wire.payload_from_json("scores", _through_json(wire.payload_to_json("scores", {"domain": stats})), width=D)
    np.testing.assert_array_equal(scores["domain"].precision, stats.precision)
    np.testing.assert_array_equal(scores["domain"].mean, stats.mean)
    assert wire.payload_from_json("moments", {}, width=D) == {}


@pytest.mark.parametrize(
    ("step", "payload", "words"),
    [
        ("scores", {"domain": {"mean": [0.0] * D, "precision": [[0.0] * D] * (D - 1)}}, "domain shapes"),
        ("scores", {"domain": {"mean": [0.0] * (D + 1), "precision": [[0.0] * D] * D}}, "domain shapes"),
        ("scores", {"domain": {"mean": "x"}}, "malformed domain"),
        ("measure", {"calibration": {"method": "federated"}}, "malformed calibration"),
        ("measure", None, "expected a mapping"),
    ],
)
def test_a_malformed_payload_is_refused(step, payload, words):
    with pytest.raises(ValueError, match=words):
        wire.payload_from_json(step, payload, width=D)


def test_replies_round_trip_and_must_match_the_layout():
    layout = {"n": (1,), "sum": (D,), "outer": (D, D)}
    sums = {"n": np.array([3.0]), "sum": np.arange(D, dtype=float), "outer": np.eye(D)}
    back = wire.reply_from_json("moments", _through_json(wire.reply_to_json("moments", sums)), layout)
    assert all(np.array_equal(back[k], sums[k]) for k in layout)
    for bad in (
        {"sums": {**wire.reply_to_json("moments", sums)["sums"], "per_molecule": [[1.0]]}},
        {"sums": {**wire.reply_to_json("moments", sums)["sums"], "sum": [1.0] * (D + 1)}},
        {"sums": {**wire.reply_to_json("moments", sums)["sums"], "n": [float("nan")]}},
        {"advert": {}},
    ):
        with pytest.raises(ValueError, match="calibration reply of 'moments'"):
            wire.reply_from_json("moments", bad, layout)
    measured = {"n.y": 10.0, "covered_90.y": 9.0}
    assert wire.reply_from_json("measure", _through_json(wire.reply_to_json("measure", measured))) == measured
    with pytest.raises(ValueError, match="finite numbers"):
        wire.reply_from_json("measure", {"measured": {"n.y": "10"}})
