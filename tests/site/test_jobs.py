"""Job parameters are untrusted input: ids, names, numbers and bounded lists only, refused naming the field."""

import pytest

from molfed.site.jobs import PartnerJob, SecAggJob, parse_job
from molfed.site.requests import RequestRefused


def _refusal(raw: dict) -> str:
    with pytest.raises(RequestRefused) as err:
        parse_job(raw)
    return str(err.value)


@pytest.mark.parametrize("action", ["prepare", "round", "finish"])
def test_partner_jobs_are_accepted(job, action):
    parsed = parse_job(
        {
            **job,
            "action": action,
            "server_round": 2,
            "options": {"lr": 1, "mu": 0.5},
            "parity_task": 0,
            "parity_edges": [0.0, 0.5, 1.0],
            "champion_uri": "models:/molfed-champion@champion",
            "state_key": "fold_1",
            "local_only": True,
        }
    )
    assert isinstance(parsed, PartnerJob) and parsed.action == action and parsed.server_round == 2
    assert parsed.options == {"lr": 1.0, "mu": 0.5} and parsed.parity_edges == [0.0, 0.5, 1.0]
    assert parsed.champion_uri == "models:/molfed-champion@champion" and parsed.local_only


def test_a_partner_job_gets_safe_defaults(job):
    parsed = parse_job(job)
    assert parsed.options == {} and parsed.parity_edges == [] and parsed.champion_uri is None
    assert parsed.state_key == "default" and not parsed.local_only


@pytest.mark.parametrize("action", ["share_keys", "mask", "reveal"])
def test_secure_aggregation_steps_are_accepted(job, action):
    parsed = parse_job(
        {
            **job,
            "action": action,
            "roster": {"alpha": {"public_key": "QUJD", "seed": None}, "beta": {"public_key": "REVG"}},
            "inbox": [{"sender": "alpha", "ciphertext": "R0hJ"}],
            "survivors": ["alpha", "beta"],
        }
    )
    assert isinstance(parsed, SecAggJob) and parsed.action == action
    assert parsed.roster["alpha"] == {"public_key": "QUJD", "seed": None} and parsed.survivors == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("changes", "field", "bad"),
    [
        ({"shell": "rm -rf ~"}, "shell", "rm -rf ~"),
        ({"parent_run_id": "../../etc/passwd"}, "parent_run_id", "../../etc/passwd"),
        ({"parent_run_id": "A" * 32}, "parent_run_id", "A" * 32),
        ({"site_run_id": "b" * 31}, "site_run_id", "b" * 31),
        ({"site_run_id": "zzzz-not-a-run-id"}, "site_run_id", "zzzz-not-a-run-id"),
        ({"partner": "beta/../alpha"}, "partner", "beta/../alpha"),
        ({"partner": ".."}, "partner", ".."),
        ({"server_round": -1}, "server_round", "-1"),
        ({"options": {"lr": "0.1; import os"}}, "options.lr", "import os"),
        ({"options": {f"o{i}": 1.0 for i in range(33)}}, "options", "o32"),
        ({"parity_edges": [0.5] * 1001}, "parity_edges", "0.5"),
        ({"champion_uri": "file:///data/library.csv"}, "champion_uri", "file:///data/library.csv"),
        ({"champion_uri": "runs:/0123/model"}, "champion_uri", "runs:/0123/model"),
        ({"state_key": "../state"}, "state_key", "../state"),
        ({"action": "exec"}, "action", "exec"),
        ({"action": "round", "roster": {}}, "roster", "{}"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None,
)
def test_a_bad_partner_job_is_refused_naming_the_field_never_the_value(job, changes, field, bad):
    reason = _refusal({**job, **changes})
    assert reason.startswith(f"malformed request: {field}: ")
    assert bad not in reason


@pytest.mark.parametrize(
    ("changes", "field", "bad"),
    [
        ({"roster": {"alpha": {"public_key": "k" * 4097}}}, "roster.alpha.public_key", "kkkk"),
        ({"inbox": [{"sender": "alpha", "ciphertext": 7}]}, "inbox.0.ciphertext", "7"),
        ({"survivors": ["alpha", "/etc"]}, "survivors.1", "/etc"),
        ({"options": {"lr": 0.1}}, "options", "0.1"),
    ],
)
def test_a_bad_secure_aggregation_step_is_refused_naming_the_field(job, changes, field, bad):
    reason = _refusal({**job, "action": "mask", **changes})
    assert reason.startswith(f"malformed request: {field}: ")
    assert bad not in reason


@pytest.mark.parametrize(
    "changes",
    [
        {"options": {"SECRET" * 11: 1.0}},
        {"action": "mask", "roster": {"../SECRET": {}}},
        {"action": "mask", "inbox": [{"SECRET" * 6: "x"}]},
    ],
    ids=["options-key", "roster-name", "inbox-key"],
)
def test_a_refused_mapping_key_is_not_echoed(job, changes):
    assert "SECRET" not in _refusal({**job, **changes})


@pytest.mark.parametrize("step", ["moments", "scores", "measure"])
def test_a_calibrate_job_names_one_of_the_calibration_steps(job, step):
    parsed = parse_job({**job, "action": "calibrate", "step": step, "server_round": 3, "state_key": "c" * 32})
    assert isinstance(parsed, PartnerJob) and parsed.action == "calibrate" and parsed.step == step


def test_the_sites_steps_are_the_calibrations_steps():
    from molfed.federated.calibration import STEPS
    from molfed.site.jobs import CALIBRATION_STEPS

    assert CALIBRATION_STEPS == STEPS


@pytest.mark.parametrize(
    ("changes", "field", "bad"),
    [
        ({"action": "calibrate", "step": "exec_code"}, "step", "exec_code"),
        ({"action": "calibrate"}, "<job>", "None"),
        ({"action": "round", "step": "moments"}, "<job>", "moments"),
        ({"action": "mask", "calibration": "measure"}, "calibration", "measure"),
    ],
    ids=["unknown-step", "no-step", "step-on-round", "secure-sum-of-measure"],
)
def test_a_calibration_job_with_an_unknown_or_misplaced_step_is_refused(job, changes, field, bad):
    reason = _refusal({**job, **changes})
    assert reason.startswith(f"malformed request: {field}: ")
    assert bad not in reason


def test_a_secure_aggregation_step_may_belong_to_a_calibration_sum(job):
    parsed = parse_job({**job, "action": "reveal", "calibration": "scores", "survivors": ["beta"]})
    assert isinstance(parsed, SecAggJob) and parsed.calibration == "scores"
    assert parse_job({**job, "action": "reveal"}).calibration is None
