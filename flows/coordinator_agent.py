"""``molfed coordinator-agent``: serves pool ``molfed-coordinator`` with the federated-training flow installed here.

A Prefect process worker on that pool would run whatever a deployment names, on the machine that holds the
coordinator's request-signing key. The agent instead reads only a flow run's parameters, validates them as molfed's
own (``config``: a :class:`~molfed.config.RunConfig`; optional ``resume_run_id``), refuses everything else (the run is
marked failed with a one-line reason) and runs :func:`flows.federated_training.federated_training` from this
installation in a child process per flow run (``python -m flows.coordinator_agent run <flow-run-id>``), which checks
the parameters again before it starts.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.states import Failed, Pending

from flows.deploy import COORDINATOR_POOL, ensure_pool
from molfed.config import RunConfig, parse_config
from molfed.errors import ConfigError

log = logging.getLogger(__name__)
POOL = COORDINATOR_POOL
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class Refused(Exception):
    """A flow run the coordinator will not run; ``str()`` is the reason."""


def admit(parameters: Any) -> tuple[RunConfig, str | None]:
    """The federation a flow run's parameters ask for.

    Raises
    ------
    Refused
        Unless the parameters are exactly ``config`` (a valid run config) and optionally ``resume_run_id``.
    """
    if not isinstance(parameters, dict) or "config" not in parameters or set(parameters) - {"config", "resume_run_id"}:
        names = sorted(parameters)[:8] if isinstance(parameters, dict) else type(parameters).__name__
        raise Refused(f"not a federated-training request: parameters {names}, expected config [, resume_run_id]")
    resume = parameters.get("resume_run_id")
    if resume is not None and not (isinstance(resume, str) and _RUN_ID.match(resume)):
        raise Refused("resume_run_id: expected an MLflow run id (32 hex digits)")
    try:
        return parse_config(parameters["config"], source="flow run parameter"), resume
    except ConfigError as exc:
        raise Refused(str(exc)[:500]) from None


class CoordinatorAgent:
    def __init__(self, *, poll_s: float = 0.5):
        self.poll_s = poll_s
        self.children: list[subprocess.Popen] = []

    def process(self, client: Any, flow_run: Any) -> str:
        claim = client.set_flow_run_state(flow_run.id, Pending(message="coordinator agent"))
        if claim.status != SetStateStatus.ACCEPT:
            return "skipped"
        try:
            admit(flow_run.parameters)
        except Refused as exc:
            reason = f"refused by the coordinator agent: {exc}"
            log.warning("flow run %s %s", flow_run.id, reason)
            client.set_flow_run_state(flow_run.id, Failed(message=reason), force=True)
            return "refused"
        self.children.append(
            subprocess.Popen([sys.executable, "-m", "flows.coordinator_agent", "run", str(flow_run.id)])
        )
        return "started"

    def serve(self, stop: threading.Event) -> None:
        from flows.site_agent import scheduled_runs

        with get_client(sync_client=True) as client:
            while not stop.is_set():
                try:
                    for flow_run in scheduled_runs(client, POOL):
                        self.process(client, flow_run)
                    client.send_worker_heartbeat(POOL, "molfed-coordinator-agent", heartbeat_interval_seconds=30)
                except Exception as exc:  # the API briefly unreachable: keep serving
                    log.warning("polling pool %s failed (%s); retrying", POOL, type(exc).__name__)
                self.children = [c for c in self.children if c.poll() is None]
                stop.wait(self.poll_s)
        for child in self.children:  # runs in progress are interrupted; `molfed resume` continues them
            child.send_signal(signal.SIGTERM)


def run_one(flow_run_id: str) -> int:
    """Child process: re-validate the flow run's parameters and run the installed flow under that flow run."""
    from prefect.flow_engine import run_flow

    from flows.federated_training import federated_training

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        try:
            config, resume = admit(flow_run.parameters)
        except Refused as exc:
            client.set_flow_run_state(flow_run.id, Failed(message=f"refused: {exc}"), force=True)
            return 2
    run_flow(federated_training, flow_run=flow_run, parameters={"config": config, "resume_run_id": resume})
    return 0


def main() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ensure_pool(POOL)
    print(f"coordinator agent on pool {POOL}", flush=True)
    CoordinatorAgent().serve(stop)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        raise SystemExit(run_one(sys.argv[2]))
    main()
