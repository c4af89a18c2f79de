"""``molfed site-agent SITE_CONFIG``: the partner's long-lived agent, the only thing at a site that acts on Prefect.

It replaces Prefect's process worker, which runs whatever a deployment on its pool names (entrypoint, storage, pull
steps, command): anyone holding the shared Prefect credential could make it run their code next to the library. The
agent instead polls its pool ``partner-<name>`` for scheduled flow runs (outbound connections only), reads nothing
of a flow run but its parameters, and before anything of the site is read checks them:

1. exactly one parameter ``job``, at most ``policy.max_request_bytes`` of JSON;
2. signed by a coordinator key in the site's ``trusted_coordinators``, not expired, not replayed
   (:mod:`molfed.site.requests`);
3. a well-formed job for this partner (:mod:`molfed.site.jobs`) of a kind, for a federation, the site's policy
   allows (:mod:`molfed.site.policy`).

A refused run is marked failed with a one-line reason and written to the site's audit log; an accepted one runs in
this process (:class:`flows.site_runner.WarmSite`: molfed's own code, the partner's data kept loaded between jobs),
and its outcome is logged too. Error details stay in the site's ``jobs.log``. A heartbeat thread keeps the pool's
worker status ONLINE, which the coordinator reads to tell an absent partner.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.states import Completed, Failed, Pending, Running

from flows.deploy import ensure_pool
from molfed.config import SiteConfig
from molfed.errors import ConfigError
from molfed.site.audit import AuditEntry, AuditLog, audit_path
from molfed.site.failures import errors_stay_at_site
from molfed.site.jobs import Job, SecAggJob, parse_job
from molfed.site.policy import check_request
from molfed.site.requests import RequestRefused, SeenNonces, Verified, trusted_keys, verify_request
from tasks.sites import partner_pool, set_state

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0


class SiteAgent:
    """Serves ``site``'s pool: admits signed jobs within policy, refuses and audits everything else."""

    def __init__(self, site: SiteConfig, *, poll_s: float = 0.25, runner: Any = None):
        """
        Raises
        ------
        ConfigError
            If the site trusts no coordinator key or its policy serves no federation or task (it would refuse
            everything; default deny is not a reason to start).
        """
        if not site.trusted_coordinators:
            raise ConfigError(
                f"site {site.name!r}: trusted_coordinators is empty; add the coordinator's public key (from `molfed "
                "keygen --coordinator-key`) to the site config. The agent does not start without one."
            )
        if not site.policy.federations or not site.policy.tasks:
            raise ConfigError(
                f"site {site.name!r}: policy.federations and policy.tasks must name the federations this site serves "
                "and the tasks whose heads may leave it (default deny)"
            )
        self.site, self.poll_s = site, poll_s
        self.pool = partner_pool(site.name)
        self.worker = f"molfed-site-agent-{site.name}-{socket.gethostname()}"
        self.trusted = trusted_keys(site.trusted_coordinators)
        self.audit = AuditLog(audit_path(site.workspace))
        self.nonces = SeenNonces(site.workspace / "agent" / "nonces.jsonl")
        if runner is None:
            from flows.site_runner import WarmSite, torch_threads

            torch_threads(site.torch_threads)
            runner = WarmSite(site)
        self.runner = runner
        self.handled = 0

    def admit(self, parameters: Any) -> tuple[Job, Verified]:
        """The job a flow run's ``parameters`` ask for, if the site accepts it.

        Raises
        ------
        RequestRefused
            With the one-line reason.
        """
        if not isinstance(parameters, dict) or set(parameters) != {"job"}:
            # the requester chose these names: cut, so a refusal cannot carry a payload into the audit log
            names = [str(k)[:32] for k in sorted(parameters)[:8]] if isinstance(parameters, dict) else "no mapping"
            raise RequestRefused(f"malformed request: expected exactly one parameter 'job', got {names}")
        size = len(json.dumps(parameters, default=str))
        if size > self.site.policy.max_request_bytes:
            raise RequestRefused(
                f"policy: request of {size} bytes, at most {self.site.policy.max_request_bytes} allowed"
            )
        verified = verify_request(
            parameters["job"], self.trusted, max_lifetime_s=self.site.policy.max_request_lifetime_s
        )
        job = parse_job(verified.job)
        if job.partner != self.site.name:
            raise RequestRefused(f"wrong site: the job is for partner {job.partner!r}, this is {self.site.name!r}")
        calibration = isinstance(job, SecAggJob) and job.calibration is not None
        check_request(self.site.policy, action=job.action, federation=verified.federation, calibration=calibration)
        self.nonces.claim(verified.nonce, verified.expires_at)
        return job, verified

    def process(self, client: Any, flow_run: Any) -> str:
        """Claim ``flow_run``, decide, run it if admitted; return the decision (``skipped`` if another took it)."""
        claim = set_state(client, flow_run.id, Pending(message="site agent"))
        if claim.status != SetStateStatus.ACCEPT:
            return "skipped"
        entry = {"flow_run": f"{flow_run.id} {flow_run.name}", "deployment": str(flow_run.deployment_id or "")}
        try:
            job, verified = self.admit(flow_run.parameters)
        except RequestRefused as exc:
            return self._refuse(client, flow_run, entry, exc)
        entry.update(key_id=verified.key_id, federation=verified.federation, action=job.action)
        entry["server_round"] = job.server_round  # type: ignore[assignment]
        self.audit.write(AuditEntry("accepted", **entry))  # type: ignore[arg-type]
        # Running is written beside the job, not before it: the job starts at once, its final state waits for it
        running = threading.Thread(target=self._mark_running, args=(client, flow_run), name="site-agent-running")
        running.start()
        try:
            with errors_stay_at_site(self.site, f"{job.action} round {job.server_round}"):
                try:
                    self.runner.run(job, verified)
                except RequestRefused as exc:  # a download or the federation's settings broke the request
                    running.join()
                    return self._refuse(client, flow_run, entry, exc)
        except RuntimeError as exc:  # details went to jobs.log; the message names the error's kind only
            self.audit.write(AuditEntry("failed", **entry, reason=str(exc)))  # type: ignore[arg-type]
            running.join()
            self._set_state(client, flow_run, Failed(message=str(exc)))
            return "failed"
        finally:
            running.join()
        self.audit.write(AuditEntry("completed", **entry))  # type: ignore[arg-type]
        self._set_state(client, flow_run, Completed(message="site agent"))
        return "completed"

    def _mark_running(self, client: Any, flow_run: Any) -> None:
        try:
            self._set_state(client, flow_run, Running(message="site agent"))
        except Exception as exc:  # the job goes on; its final state is forced anyway
            log.warning("flow run %s: could not mark it running (%s)", flow_run.id, type(exc).__name__)

    @staticmethod
    def _set_state(client: Any, flow_run: Any, state: Any) -> None:
        """Force ``flow_run`` into ``state`` (this agent holds the claim), retried quickly while the server is busy."""
        set_state(client, flow_run.id, state, force=True)

    def _refuse(self, client: Any, flow_run: Any, entry: dict[str, Any], exc: RequestRefused) -> str:
        reason = f"refused by site {self.site.name}: {exc}"
        self.audit.write(AuditEntry("refused", **entry, reason=str(exc)))
        log.warning("flow run %s %s", flow_run.id, reason)
        self._set_state(client, flow_run, Failed(message=reason))
        return "refused"

    def poll_once(self, client: Any) -> int:
        """Process every flow run now scheduled on the pool; return how many were decided."""
        done = 0
        for flow_run in scheduled_runs(client, self.pool):
            if self.process(client, flow_run) != "skipped":
                done += 1
                self.handled += 1
        return done

    def serve(self, stop: threading.Event | None = None, *, until: Callable[[], bool] | None = None) -> None:
        """Poll until ``stop`` is set (or ``until()`` is true), with a heartbeat thread beside."""
        stop = stop or threading.Event()
        self.audit.write(AuditEntry("started", reason=f"pool {self.pool}, worker {self.worker}"))
        beat = threading.Thread(target=self._heartbeat, args=(stop,), name="site-agent-heartbeat", daemon=True)
        beat.start()
        try:
            with get_client(sync_client=True) as client:
                while not stop.is_set() and not (until and until()):
                    try:
                        found = self.poll_once(client)
                    except Exception as exc:  # the API briefly unreachable: keep serving
                        log.warning("polling pool %s failed (%s); retrying", self.pool, type(exc).__name__)
                        found = 0
                        stop.wait(2.0)
                    if not found:
                        stop.wait(self.poll_s)
        finally:
            stop.set()
            self.audit.write(AuditEntry("stopped", reason=f"pool {self.pool}"))

    def _heartbeat(self, stop: threading.Event) -> None:
        with get_client(sync_client=True) as client:
            while not stop.is_set():
                try:
                    client.send_worker_heartbeat(self.pool, self.worker, heartbeat_interval_seconds=HEARTBEAT_S)
                except Exception as exc:
                    log.warning("heartbeat for pool %s failed (%s)", self.pool, type(exc).__name__)
                stop.wait(HEARTBEAT_S)


def scheduled_runs(client: Any, pool: str, limit: int = 50) -> list[Any]:
    """Flow runs of work pool ``pool`` that are scheduled and due, oldest first.

    A read-only query: Prefect's worker endpoint (``get_scheduled_flow_runs``) also writes the pool's and queues'
    polling status on every call, which, from several agents polling often, kept a SQLite-backed server busy enough
    to answer 503s (measured with ``bench/sites.py``)."""
    from datetime import UTC, datetime

    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    due = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)),
    )
    return client.read_flow_runs(
        flow_run_filter=due,
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=limit,
    )


def main(site: SiteConfig) -> None:
    """Run the agent until interrupted (SIGINT/SIGTERM)."""
    import signal

    agent = SiteAgent(site)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ensure_pool(agent.pool)
    print(f"partner {site.name}: site agent on pool {agent.pool} (audit log {agent.audit.path})", flush=True)
    started = time.monotonic()
    agent.serve(stop)
    print(f"partner {site.name}: site agent stopped after {time.monotonic() - started:.0f} s", flush=True)
