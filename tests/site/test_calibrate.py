"""A site's ``calibrate`` job (flows/site_runner.py) against a stand-in artifact store: everything it fetches is
checked against what the coordinator signed before the library is opened, it prepares with the federation's
calibration hold-out, and its reply holds sums only (or, under secure aggregation, round keys)."""

import json
import time

import numpy as np
import pytest

from flows.site_runner import WarmSite
from molfed import layout
from molfed.config import SiteConfig, parse_config, site_run_config
from molfed.data.demo import write_demo_partners
from molfed.federated import calibration as cal
from molfed.federated import calibration_wire as cal_wire
from molfed.federated import conformal as cf
from molfed.federated import coordinator as coord
from molfed.federated.weights import weights_digest
from molfed.models.model import ModelSpec
from molfed.preparation import calibration_fraction
from molfed.site.jobs import parse_job
from molfed.site.requests import RequestRefused, Verified, json_digest

FED_RUN, SITE_RUN = "a" * 32, "b" * 32
HIDDEN = 16


def _federation(**changes):
    raw = {
        "mode": "sites",
        "name": "fed-name",
        "tasks": [{"name": "expt"}],
        "partners": [{"name": "alpha"}, {"name": "beta"}],
        "model": {"hidden_channels": HIDDEN, "num_layers": 2},
        "baselines": {"pooled": False},
        "calibration": {"enabled": True},
    }
    return parse_config({**raw, **changes})


class Store:
    """The federation run's artifacts by path (served as JSON round trips) and what the site uploads."""

    def __init__(self, files):
        self.files, self.put, self.fetched = files, {}, []

    def get_json(self, run_id, path):
        assert run_id == FED_RUN
        self.fetched.append(path)
        return json.loads(json.dumps(self.files[path]))

    def get_weights(self, run_id, path):
        assert run_id == FED_RUN
        self.fetched.append(path)
        return self.files[path]

    def put_json(self, run_id, path, obj):
        assert run_id == SITE_RUN
        self.put[path] = json.loads(json.dumps(obj))


@pytest.fixture(scope="module")
def plan():
    spec = coord.model_spec(
        encoder="gine",
        hidden_channels=HIDDEN,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=1,
        task_names=["expt"],
        task_types=["regression"],
    )
    return {"spec": spec.to_dict(), "scaling": {"mean": [-3.8], "std": [3.8]}}, coord.initial_weights(spec, 0)


def _site(tmp_path, library):
    return SiteConfig.model_validate(
        {
            "name": "beta",
            "path": str(library),
            "label_columns": {"expt": "expt"},
            "workspace": str(tmp_path / "ws"),
            "policy": {"federations": ["fed-name"], "tasks": ["expt"], "jobs": ["calibrate"]},
        }
    )


def _domain_payload():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(HIDDEN, HIDDEN))
    stats = cf.EmbeddingStats(rng.normal(size=HIDDEN), a @ a.T + np.eye(HIDDEN))
    return cal_wire.payload_to_json("scores", {"domain": stats})


def _setup(tmp_path, plan, library, step, federation=None, payload=None):
    """A site, a store holding the federation's files, and a signed ``step`` request (as the site verified it)."""
    federation = federation or _federation()
    plan_json, weights = plan
    config = federation.model_dump(mode="json")
    files = {
        layout.CONFIG: config,
        layout.PLAN: plan_json,
        layout.global_weights(1): weights,
    }
    bindings = {"config": json_digest(config), "plan": json_digest(plan_json), "weights": weights_digest(weights)}
    if payload is not None:
        files[layout.calibration_payload(step)] = payload
        bindings["payload"] = json_digest(payload)
    raw = {
        "partner": "beta",
        "action": "calibrate",
        "step": step,
        "parent_run_id": FED_RUN,
        "site_run_id": SITE_RUN,
        "server_round": 1,
        "state_key": FED_RUN,
    }
    verified = Verified(raw, "fed-name", "k" * 16, "n" * 32, time.time() + 600, bindings)
    runner = WarmSite(_site(tmp_path, library))
    store = Store(files)
    runner._artifacts = store
    return runner, store, parse_job(raw), verified


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return write_demo_partners(tmp_path_factory.mktemp("demo"), seed=0)["gamma"]


def test_a_tampered_payload_is_refused_before_the_library_is_opened(tmp_path, plan):
    missing = tmp_path / "never-read.csv"  # opening it would raise InputError, not a refusal
    runner, store, job, verified = _setup(tmp_path, plan, missing, "scores", payload=_domain_payload())
    store.files[layout.calibration_payload("scores")]["domain"]["mean"][0] += 1.0  # the store was written to
    with pytest.raises(RequestRefused, match="tampered download: 'payload' differs from what the coordinator signed"):
        runner.run(job, verified)
    assert store.put == {} and runner._data == {}
    assert not (tmp_path / "ws").exists()  # nothing prepared, no workspace written


def test_a_payload_the_request_did_not_bind_is_refused(tmp_path, plan):
    runner, store, job, verified = _setup(tmp_path, plan, tmp_path / "never-read.csv", "measure")
    store.files[layout.calibration_payload("measure")] = {"calibration": {}, "domain_level": 0.9}
    with pytest.raises(RequestRefused, match="unbound download: the request did not sign 'payload'"):
        runner.run(job, verified)
    assert store.put == {} and runner._data == {}


def test_tampered_weights_are_refused(tmp_path, plan):
    runner, store, job, verified = _setup(tmp_path, plan, tmp_path / "never-read.csv", "moments")
    weights = dict(store.files[layout.global_weights(1)])
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    store.files[layout.global_weights(1)] = weights
    with pytest.raises(RequestRefused, match="tampered download: 'weights'"):
        runner.run(job, verified)
    assert store.put == {} and runner._data == {}


def test_a_federation_that_does_not_calibrate_is_refused(tmp_path, plan):
    off = _federation(calibration={"enabled": False})
    runner, store, job, verified = _setup(tmp_path, plan, tmp_path / "never-read.csv", "moments", federation=off)
    with pytest.raises(RequestRefused, match="does not calibrate"):
        runner.run(job, verified)
    assert store.put == {} and runner._data == {}


def test_the_site_carves_the_calibration_hold_out_exactly_when_the_federation_calibrates(tmp_path):
    site = _site(tmp_path, tmp_path / "lib.csv")
    assert calibration_fraction(site_run_config(_federation(), site)) == 0.1
    fraction = {"enabled": True, "fraction": 0.2}
    assert calibration_fraction(site_run_config(_federation(calibration=fraction), site)) == 0.2
    # sites mode does not calibrate by default: its site view (local mode, which would) must not carve either
    assert calibration_fraction(site_run_config(_federation(calibration={}), site)) == 0.0
    assert calibration_fraction(site_run_config(_federation(calibration={"source": "val"}), site)) == 0.0


def test_the_moments_reply_holds_the_training_splits_sums_only(tmp_path, plan, library):
    runner, store, job, verified = _setup(tmp_path, plan, library, "moments")
    runner.run(job, verified)
    (data,) = runner._data.values()
    assert len(data.splits["cal"]) > 0  # prepared with the federation's hold-out
    reply = store.put[layout.calibration_reply("moments", 1)]
    assert set(reply) == {"sums"}
    sums = cal_wire.reply_from_json("moments", reply, cal.moments_layout(ModelSpec.from_dict(plan[0]["spec"])))
    assert sums["n"][0] == len(data.splits["train"])  # one count, a [d] sum and a [d, d] sum: nothing per molecule


def test_under_secure_aggregation_the_sums_stay_at_the_site_and_round_keys_go(tmp_path, plan, library):
    secure = _federation(secure_aggregation={"enabled": True})
    runner, store, job, verified = _setup(tmp_path, plan, library, "moments", federation=secure)
    runner.run(job, verified)
    reply = store.put[layout.calibration_reply("moments", 1)]
    assert set(reply) == {"advert"} and reply["advert"]["partner"] == "beta"
    from molfed.federated.secure.site import HELD, round_dir

    held = round_dir(tmp_path / "ws", cal.secure_key(FED_RUN, "moments"), 0) / HELD
    assert held.exists()  # kept for the secure sum's mask step
