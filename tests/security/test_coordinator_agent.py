"""Attacks on the coordinator's pool through a real Prefect server: the coordinator machine holds the key that signs
site requests, so it must not run code a holder of the shared Prefect credential deploys there.

A plain process worker on ``molfed-coordinator`` (what the README used to start) runs a foreign deployment's
entrypoint; ``molfed coordinator-agent`` refuses the flow run and never imports or runs it. The positive path (a real
federation through the agent) is the sites integration test's.
"""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client

from flows.coordinator_agent import POOL, CoordinatorAgent, admit

pytestmark = [pytest.mark.integration]

EVIL = """
from pathlib import Path
from prefect import flow

@flow
def evil(config: dict | None = None):
    Path({marker!r}).write_text("ran")
"""


def _submit(deployment: str, parameters: dict) -> tuple[str, str, str]:
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters=parameters, timeout=0)
    agent = CoordinatorAgent()
    with get_client(sync_client=True) as client:
        decision = agent.process(client, client.read_flow_run(run.id))
        state = client.read_flow_run(run.id).state
    assert not agent.children  # nothing was started
    return decision, state.type.value, state.message or ""


def test_a_foreign_deployment_on_the_coordinators_pool_is_refused_and_never_runs(prefect_api, tmp_path):
    from prefect import flow

    from flows.deploy import ensure_pool

    ensure_pool(POOL)
    marker = tmp_path / "attacker-code-ran"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    flow.from_source(source=str(tmp_path), entrypoint="evil.py:evil").deploy(
        name="evil", work_pool_name=POOL, print_next_steps=False
    )
    decision, state, message = _submit("evil/evil", {})
    assert (decision, state) == ("refused", "FAILED")
    assert message.startswith("refused by the coordinator agent: not a federated-training request")
    # config-shaped, but not a valid molfed config: still refused, still not run
    decision, state, message = _submit("evil/evil", {"config": {"name": "x", "command": "sh"}})
    assert (decision, state) == ("refused", "FAILED")
    assert "command: Extra inputs are not permitted" in message
    assert not marker.exists()


def test_only_a_valid_config_and_run_id_are_admitted():
    config = {"tasks": [{"name": "y"}], "partners": [{"name": "a", "path": "a.csv"}]}
    assert admit({"config": config})[0].partners[0].name == "a"
    assert admit({"config": config, "resume_run_id": "a" * 32})[1] == "a" * 32
    with pytest.raises(Exception, match="resume_run_id: expected an MLflow run id"):
        admit({"config": config, "resume_run_id": "../x"})
    with pytest.raises(Exception, match="not a federated-training request"):
        admit({"config": config, "entrypoint": "evil.py:evil"})
