"""SiteAgent.admit: the chain a flow run's parameters pass before the site reads anything; the audit log."""

import json
import stat

import pytest

from flows.site_agent import SiteAgent
from molfed.config import SiteConfig
from molfed.errors import ConfigError
from molfed.federated.signing import generate_keypair, load_private_key
from molfed.site.audit import AuditEntry, AuditLog, audit_path
from molfed.site.requests import RequestRefused, RequestSigner

BINDINGS = {"config": "c" * 64}


def _site(tmp_path, public, **policy):
    return SiteConfig.model_validate(
        {
            "name": "beta",
            "path": str(tmp_path / "beta.csv"),
            "workspace": str(tmp_path / "ws"),
            "trusted_coordinators": {"coordinator": public} if public else {},
            "policy": {"federations": ["fed-name"], "tasks": ["y"], **policy},
        }
    )


@pytest.fixture
def agent(tmp_path, coordinator_key):
    return SiteAgent(_site(tmp_path, coordinator_key[1]), runner=object())


def _refusal(agent, parameters) -> str:
    with pytest.raises(RequestRefused) as err:
        agent.admit(parameters)
    return str(err.value)


def test_a_signed_job_within_policy_is_admitted(agent, signer, job):
    signed = signer.sign(job, bindings=BINDINGS, lifetime_s=600)
    admitted, verified = agent.admit({"job": signed})
    assert admitted.partner == "beta" and admitted.action == "prepare" and admitted.parent_run_id == "a" * 32
    assert verified.federation == "fed-name" and verified.key_id == signer.key_id and verified.bindings == BINDINGS


def test_the_same_request_a_second_time_is_refused_as_replayed(agent, signer, job, tmp_path, coordinator_key):
    parameters = {"job": signer.sign(job, bindings=BINDINGS, lifetime_s=600)}
    agent.admit(parameters)
    assert _refusal(agent, parameters).startswith("replayed request")
    restarted = SiteAgent(_site(tmp_path, coordinator_key[1]), runner=object())
    assert _refusal(restarted, parameters).startswith("replayed request")


def test_a_job_for_another_partner_is_refused(agent, signer, job):
    signed = signer.sign({**job, "partner": "alpha"}, bindings=BINDINGS, lifetime_s=600)
    assert _refusal(agent, {"job": signed}) == "wrong site: the job is for partner 'alpha', this is 'beta'"


def test_parameters_must_be_exactly_one_job(agent, signer, job):
    signed = signer.sign(job, bindings=BINDINGS, lifetime_s=600)
    reason = _refusal(agent, {"job": signed, "entrypoint": "evil.py:flow"})
    assert reason == "malformed request: expected exactly one parameter 'job', got ['entrypoint', 'job']"
    assert _refusal(agent, {}).startswith("malformed request: expected exactly one parameter 'job'")
    assert _refusal(agent, [signed]).startswith("malformed request")
    agent.admit({"job": signed})  # the refusals above did not use up its nonce


def test_unsigned_and_untrusted_jobs_are_refused(agent, job):
    assert _refusal(agent, {"job": job}).startswith("unsigned request")
    stranger = RequestSigner(load_private_key(generate_keypair()[0]), "fed-name")
    signed = stranger.sign(job, bindings=BINDINGS, lifetime_s=600)
    assert _refusal(agent, {"job": signed}).startswith("untrusted key")


def test_a_malformed_job_is_refused_even_when_signed(agent, signer, job):
    signed = signer.sign({**job, "parent_run_id": "../../etc"}, bindings=BINDINGS, lifetime_s=600)
    assert _refusal(agent, {"job": signed}).startswith("malformed request: parent_run_id: ")


def test_parameters_over_the_size_limit_are_refused(tmp_path, coordinator_key, signer, job):
    agent = SiteAgent(_site(tmp_path, coordinator_key[1], max_request_bytes=1_000), runner=object())
    small = signer.sign(job, bindings=BINDINGS, lifetime_s=600)
    large = signer.sign({**job, "parity_edges": [0.125] * 200}, bindings=BINDINGS, lifetime_s=600)
    assert len(json.dumps({"job": large})) > 1_000 > len(json.dumps({"job": small}))
    assert _refusal(agent, {"job": large}).startswith("policy: request of ")
    agent.admit({"job": small})


def test_a_job_kind_the_policy_does_not_allow_is_refused(tmp_path, coordinator_key, signer, job):
    agent = SiteAgent(_site(tmp_path, coordinator_key[1], jobs=["prepare"]), runner=object())
    signed = signer.sign({**job, "action": "round"}, bindings=BINDINGS, lifetime_s=600)
    assert _refusal(agent, {"job": signed}).startswith("policy: job kind 'round' is not allowed")
    assert agent.nonces.seen == {}
    agent.admit({"job": signer.sign(job, bindings=BINDINGS, lifetime_s=600)})


def test_a_federation_the_site_does_not_serve_is_refused(agent, coordinator_key, job):
    other = RequestSigner(load_private_key(coordinator_key[0]), "other-fed")
    signed = other.sign(job, bindings=BINDINGS, lifetime_s=600)
    assert _refusal(agent, {"job": signed}) == "policy: federation 'other-fed' is not one this site serves"


def test_a_request_valid_for_longer_than_the_policy_allows_is_refused(tmp_path, coordinator_key, signer, job):
    agent = SiteAgent(_site(tmp_path, coordinator_key[1], max_request_lifetime_s=600), runner=object())
    signed = signer.sign(job, bindings=BINDINGS, lifetime_s=3_600)
    assert _refusal(agent, {"job": signed}).startswith("expired request: valid for 3600 s")


@pytest.mark.parametrize(
    ("trusted", "policy", "words"),
    [
        (False, {}, "trusted_coordinators is empty"),
        (True, {"federations": []}, "policy.federations and policy.tasks must name"),
        (True, {"tasks": []}, "policy.federations and policy.tasks must name"),
    ],
    ids=["no-trusted-key", "no-federation", "no-task"],
)
def test_the_agent_does_not_start_when_it_would_refuse_everything(tmp_path, coordinator_key, trusted, policy, words):
    site = _site(tmp_path, coordinator_key[1] if trusted else None, **policy)
    with pytest.raises(ConfigError, match=words):
        SiteAgent(site, runner=object())
    assert not (tmp_path / "ws").exists()


def test_the_audit_log_appends_one_json_line_per_decision_readable_by_the_site_only(tmp_path):
    path = audit_path(tmp_path / "ws")
    assert path == tmp_path / "ws" / "agent" / "audit.jsonl"
    log = AuditLog(path)
    log.write(AuditEntry("refused", flow_run="run-1", reason="unsigned request: no coordinator signature"))
    log.write(AuditEntry("accepted", key_id="k1", federation="fed-name", action="round", server_round=2))
    AuditLog(path).write(AuditEntry("completed", action="round"))  # reopening appends
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["decision"] == "refused" and first["flow_run"] == "run-1" and first["reason"].startswith("unsigned")
    assert second == {
        "time": second["time"],
        "decision": "accepted",
        "flow_run": "",
        "deployment": "",
        "key_id": "k1",
        "federation": "fed-name",
        "action": "round",
        "server_round": 2,
        "reason": "",
    }
    assert third["decision"] == "completed" and first["time"] <= second["time"] <= third["time"]
    assert first["time"][:4].isdigit() and first["time"].endswith("+00:00")
    assert AuditLog(path).entries() == [first, second, third]


def test_calibrate_is_refused_unless_the_policy_lists_it(tmp_path, coordinator_key, signer, job):
    """Default deny: a site that wrote its policy before calibration existed does not start sending embedding
    moments and score histograms; one that lists ``calibrate`` accepts it."""
    calibrate = {**job, "action": "calibrate", "step": "moments"}
    signed = signer.sign(calibrate, bindings=BINDINGS, lifetime_s=600)
    refused = _refusal(SiteAgent(_site(tmp_path, coordinator_key[1]), runner=object()), {"job": signed})
    assert refused.startswith("policy: job kind 'calibrate' is not allowed at this site")
    # its secure sums' steps too: a share_keys of a calibration sum is calibration
    share = signer.sign({**job, "action": "share_keys", "calibration": "moments"}, bindings={}, lifetime_s=600)
    agent = SiteAgent(_site(tmp_path, coordinator_key[1]), runner=object())
    assert _refusal(agent, {"job": share}).startswith("policy: job kind 'calibrate' is not allowed")
    assert agent.nonces.seen == {}
    agent.admit({"job": signer.sign({**job, "action": "share_keys"}, bindings={}, lifetime_s=600)})  # a round's
    policy = {"jobs": ["prepare", "calibrate", "share_keys"]}
    allowed = SiteAgent(_site(tmp_path, coordinator_key[1], **policy), runner=object())
    admitted, _ = allowed.admit({"job": signer.sign(calibrate, bindings=BINDINGS, lifetime_s=600)})
    assert admitted.action == "calibrate" and admitted.step == "moments"
    allowed.admit({"job": share})
