"""Sites mode: each partner's jobs run at the partner's own site agent (``molfed site-agent``, pool ``partner-<name>``).

The coordinator never learns a partner's path. Per job it creates a flow run of the partner's deployment
``partner-job/partner-<name>`` whose parameters are ids and numbers only, signed with the coordinator's key together
with the digests of everything the job will fetch (:mod:`molfed.site.requests`); weights and replies travel through the
MLflow tracking server's artifact store: the coordinator publishes the plan and each round's global weights on
the federation run, each partner downloads them and uploads its reply (update weights, counts, metrics) to its
own ``site-<name>`` child run. Under secure aggregation the update stays at the site and its round keys come
instead; the protocol's other steps are light ``secagg-job`` runs (``tasks/secagg_sites.py``). Calibration of the
kept model is three more jobs (``calibrate``, one per step); their payloads are artifacts of the federation run bound
by digest, their replies sums (or, under secure aggregation, round keys of a secure sum).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from uuid import uuid4

from prefect.client.orchestration import get_client
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, WorkerStatus
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Scheduled, to_state_create

from molfed import layout
from molfed.config import RunConfig
from molfed.errors import ConfigError
from molfed.federated import calibration as cal
from molfed.federated import calibration_wire as cal_wire
from molfed.federated import conformal as cf
from molfed.federated import jobs
from molfed.federated.secure import wire
from molfed.federated.signing import SignedUpdate, load_private_key, signature_from_json
from molfed.federated.types import Failure, Update, Weights
from molfed.federated.weights import weights_digest
from molfed.models.model import ModelSpec
from molfed.site.requests import RequestSigner, json_digest
from molfed.site_artifacts import Artifacts
from molfed.tracking import Tracker

POLL_S = 0.1
"""How often the coordinator looks at its pending jobs' states (one read-only query for all of them; a job's reply
is fetched as soon as it completes, while the others still run)."""
OFFLINE_CHECK_S = 5.0
"""How often, per partner, a job not done after ``offline_after_s`` makes the coordinator check the pool's agents."""

PARTNER_FLOW = "partner-job"
SECAGG_FLOW = "secagg-job"  # a partner's secure-aggregation steps (same agent, same pool)
_ACTIVE: dict[str, SitePartners] = {}


def partner_pool(name: str) -> str:
    """The Prefect work pool that partner ``name``'s site agent serves."""
    return f"partner-{name}"


def partner_deployment(name: str, flow: str = PARTNER_FLOW) -> str:
    return f"{flow}/{partner_pool(name)}"


def active(run_id: str) -> SitePartners:
    """The partner pool of federation run ``run_id`` in this process (for the secure-aggregation transport)."""
    try:
        return _ACTIVE[run_id]
    except KeyError:
        raise RuntimeError(f"no sites partner pool is open for run {run_id!r}") from None


def _api(client: Any, method: str, path: str, body: Mapping[str, Any], attempts: int = 60) -> Any:
    """One Prefect API request through ``client``'s HTTP session, retried quickly while the server is busy; the
    response's JSON, or None for a 404.

    A Prefect server on SQLite answers 503 when two writers collide ("database is locked"). Prefect's client then
    waits 2, 4, 8, ... s — and even with its retries turned off it sleeps 2 s after a 503 before returning it
    (``prefect/client/base.py``, 3.9). Here the request goes out once per attempt and a 503 (or 429, 502, or a
    dropped connection) is retried after 50 ms, growing to 2 s."""
    import httpx

    http = client._client  # Prefect's httpx client: base URL and auth headers as configured
    if getattr(http, "enable_csrf_support", False):  # its CSRF token handshake lives in Prefect's own send
        return client.request(method, path, json=body).json()
    delay = 0.05
    for attempt in range(attempts):
        try:
            response = httpx.Client.send(http, http.build_request(method, path, json=body))
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
        else:
            if response.status_code not in (429, 502, 503) or attempt == attempts - 1:
                if response.status_code == 404:
                    return None
                response.raise_for_status()
                return response.json()
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise AssertionError("unreachable")


def set_state(client: Any, flow_run_id: Any, state: State, *, force: bool = False) -> OrchestrationResult:
    """``client.set_flow_run_state``, retried quickly while the server is busy (see :func:`_api`).

    Raises
    ------
    ObjectNotFound
        If the flow run does not exist."""
    create = to_state_create(state)
    create.state_details.flow_run_id = flow_run_id
    create.state_details.transition_id = uuid4()
    body = {"state": create.model_dump(mode="json", serialize_as_any=True), "force": force}
    out = _api(client, "POST", f"/flow_runs/{flow_run_id}/set_state", body)
    if out is None:
        raise ObjectNotFound(http_exc=LookupError(str(flow_run_id)))
    return OrchestrationResult.model_validate(out)


def site_experiment(experiment: str, partner: str) -> str:
    """The MLflow experiment holding partner ``partner``'s reply runs."""
    return f"{experiment}.site-{partner}"


def request_signer(config: RunConfig) -> RequestSigner:
    """The coordinator's signer of job requests, from ``integrity.coordinator_key``.

    Raises
    ------
    ConfigError
        If the key is not configured or cannot be read.
    """
    path = config.integrity.coordinator_key
    if path is None:
        raise ConfigError(
            "integrity.coordinator_key: sites mode signs every job request; run `molfed keygen --coordinator-key "
            "coordinator_key.pem`, give each site the printed public key (trusted_coordinators) and set this"
        )
    try:
        return RequestSigner(load_private_key(path.read_bytes()), config.name)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"integrity.coordinator_key: {path}: cannot read the key ({type(exc).__name__})") from None


def _worker_online(client: Any, partner: str) -> bool:
    """Whether any worker of the partner's pool has sent a heartbeat recently (Prefect's ONLINE status)."""
    workers = client.read_workers_for_work_pool(partner_pool(partner))
    return any(w.status == WorkerStatus.ONLINE for w in workers)


class SitePartners:
    """Partners behind their own walls, reached through Prefect deployments and MLflow artifacts."""

    def __init__(self, config: RunConfig, tracker: Tracker, run_id: str):
        self.config, self.tracker, self.run_id = config, tracker, run_id
        self.names = [x.name for x in config.partners]
        self.signer = request_signer(config)
        self.site_runs = {n: self._site_run(n) for n in self.names}
        self.timeout = config.federation.round_timeout_s
        self.offline_after = min(config.federation.offline_after_s, self.timeout)
        self._local_only: dict[str, Any] = {}
        self.artifacts = Artifacts(tracker.tracking_uri)
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sites")
        self._client: Any = None
        self._deployments: dict[str, Any] = {}
        """Deployment ids by name (``partner-job/partner-<name>``), looked up once per run."""
        self.adverts: dict[int, dict[str, dict[str, Any]]] = {}
        """Per round, each partner's round keys (JSON) from its round job under secure aggregation (round 0: from
        its calibrate job, for a calibration step's secure sum)."""
        self._finished: dict[str, int] = {}
        """Rounds whose global weights the sites' final jobs evaluated, by weights digest (calibration binds them)."""
        _ACTIVE[run_id] = self
        # the flow logged the config (layout.CONFIG) when the run started; sites fetch it and check this digest
        published = tracker.download_json(run_id, layout.CONFIG)
        self.bindings: dict[str, str] = {"config": json_digest(published)}
        """Digests of what jobs fetch from the federation run, signed into every request that fetches them."""

    def _site_run(self, name: str) -> str:
        """The partner's reply run, in its own experiment ``<experiment>.site-<name>`` (MLflow's permissions are per
        experiment): with ``tracking_user`` set, that user may edit only this experiment and read the federation's,
        so a site can neither overwrite round weights nor read another site's replies."""
        experiment = self.tracker.experiment(site_experiment(self.config.tracking.experiment, name))
        tags = {"molfed.kind": "site", "molfed.partner": name}
        run = self.tracker.start_run(f"site-{name}", parent_run_id=self.run_id, tags=tags, experiment_id=experiment)
        fed, secure = self.config.federation, self.config.secure_aggregation.enabled
        params = {"kind": "site", "partner": name, "federation_run": self.run_id, "federation.strategy": fed.strategy}
        params |= {"federation.rounds": str(fed.rounds), "secure_aggregation": str(secure)}
        self.tracker.log_params(run, params)  # MLflow's Compare page needs params (issue 19); replies are artifacts
        user = next(p.tracking_user for p in self.config.partners if p.name == name)
        if user:
            self.tracker.grant(user, permission="EDIT", experiment_id=experiment)
            self.tracker.grant(user, permission="READ", experiment_id=self.tracker.experiment_id)
            model = self.config.tracking.registered_model
            if model and self.tracker.has_registered_model(model):
                self.tracker.grant(user, permission="READ", registered_model=model)
        return run

    def _dispatch(
        self,
        action: str,
        server_round: int = 0,
        partners: Sequence[str] | None = None,
        *,
        flow: str = PARTNER_FLOW,
        each: Mapping[str, Mapping[str, Any]] | None = None,
        bindings: Mapping[str, str] | None = None,
        fetch: Callable[[str], Any] | None = None,
        **params: Any,
    ) -> tuple[dict[str, Any], list[Failure]]:
        """Start ``action`` of ``flow`` at ``partners`` (default: every partner) with ``params`` and the partner's
        ``each`` entry, signed together with ``bindings`` (digests of what the job fetches); wait until each
        finishes or the timeout passes. Each reply is fetched (``fetch(partner)``; default: the reply JSON) as soon
        as its job completes, while the others still run; one that cannot be read is that partner's failure."""
        names = self.names if partners is None else list(partners)
        fetch = fetch or (lambda n: self.artifacts.get_json(self.site_runs[n], layout.site_reply(action, server_round)))
        requests = []
        for n in names:
            job = {
                "partner": n,
                "action": action,
                "parent_run_id": self.run_id,
                "site_run_id": self.site_runs[n],
                "server_round": server_round,
                **params,
                **(each or {}).get(n, {}),
            }
            signed = self.signer.sign(job, bindings=bindings or {}, lifetime_s=self.timeout + 120)
            requests.append((partner_deployment(n, flow), signed, f"{action}-{server_round}-{n}"))
        client = self._prefect()
        runs = {n: self._create(client, *r) for n, r in zip(names, requests, strict=True)}
        started = time.monotonic()
        deadline, offline_check = started + self.timeout, started + self.offline_after
        pending, states, offline, gone = dict(runs), {}, set[str](), set[str]()
        fetched: dict[str, Future[Any]] = {}
        checked: dict[str, float] = {}
        while pending and time.monotonic() < deadline:
            ids = FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in pending.values()]))
            current = {r.id: r.state for r in client.read_flow_runs(flow_run_filter=ids, limit=len(pending))}
            now = time.monotonic()
            for n, run in list(pending.items()):
                state = current.get(run.id)
                if state is not None and state.is_final():
                    states[n] = state
                    del pending[n]
                    if state.is_completed():
                        fetched[n] = self._threads.submit(fetch, n)
                    continue
                if now < offline_check or now - checked.get(n, 0.0) < OFFLINE_CHECK_S or state is None:
                    continue
                checked[n] = now  # is anybody serving the pool? (one heartbeat query per partner every 5 s)
                if not state.is_final() and not _worker_online(client, n):
                    # unclaimed with nobody to claim it, or its agent died mid-job: don't wait for the timeout
                    (offline if state.is_scheduled() else gone).add(n)
                    del pending[n]
            if pending:
                time.sleep(POLL_S)
        for n, run in runs.items():  # never picked up or still running: stop it, count it as failed
            if n in pending or n in offline or n in gone:
                set_state(client, run.id, Cancelled(message="coordinator timeout"), force=True)
        replies, failures = {}, []
        for n in names:
            pool = partner_pool(n)
            if n in gone:
                failures.append(Failure(n, f"the agent of pool '{pool}' went offline during the {action} job"))
            elif n in offline:
                failures.append(
                    Failure(n, f"no worker online for pool '{pool}' after {self.offline_after:.0f} s; start it")
                )
            elif n in pending:
                failures.append(
                    Failure(n, f"no reply within {self.timeout:.0f} s; is the worker for pool '{pool}' running?")
                )
            elif not states[n].is_completed():
                failures.append(Failure(n, f"{action} job {states[n].type.value.lower()}: {states[n].message or ''}"))
            else:
                try:
                    replies[n] = fetched[n].result()
                except Exception as exc:  # a missing or malformed reply is that partner's failure, not the run's
                    failures.append(Failure(n, f"{action} reply unreadable ({type(exc).__name__})"))
        return replies, failures

    def _prefect(self) -> Any:
        """The coordinator's Prefect client, opened once per run (thread-safe: jobs are created concurrently)."""
        if self._client is None:
            self._client = get_client(sync_client=True)
            self._client.__enter__()
        return self._client

    def _create(self, client: Any, deployment: str, job: Mapping[str, Any], name: str) -> FlowRun:
        """A flow run of ``deployment`` carrying the signed ``job`` (the deployment's id is looked up once per run;
        the request's nonce is the idempotency key, so a retried create that did reach the database returns the
        same flow run)."""
        body = DeploymentFlowRunCreate(
            parameters={"job": job},
            state=to_state_create(Scheduled()),
            name=name,
            idempotency_key=job["request"]["nonce"],
        ).model_dump(mode="json", exclude_unset=True)
        for _ in range(2):
            if deployment not in self._deployments:
                self._deployments[deployment] = client.read_deployment_by_name(deployment).id
            created = _api(client, "POST", f"/deployments/{self._deployments[deployment]}/create_flow_run", body)
            if created is not None:
                return FlowRun.model_validate(created)
            del self._deployments[deployment]  # redeployed since it was looked up: look it up again, once
        raise ObjectNotFound(http_exc=LookupError(deployment))

    def prepare(self) -> tuple[dict[str, jobs.Prepared], list[Failure]]:
        """Partners that fail to prepare (worker down, bad library) sit the run out; the flow applies the quorum."""
        from molfed.federated.partner import PartnerSummary

        out, failures = self._dispatch("prepare", bindings=self.bindings)
        self.names = [n for n in self.names if n in out]
        return {n: jobs.Prepared(PartnerSummary(**r["summary"]), r["moments"]) for n, r in out.items()}, failures

    def publish(self, spec: ModelSpec, scaling: Mapping[str, Sequence[float]], weights: Weights) -> None:
        """The plan every partner follows (model spec, target scaling) and the round-0 global weights."""
        plan = {"spec": spec.to_dict(), "scaling": dict(scaling)}
        self.tracker.log_json(self.run_id, plan, layout.PLAN)
        self.tracker.log_weights(self.run_id, weights, layout.global_weights(0))
        self.bindings.update(plan=json_digest(plan), init=weights_digest(weights))

    def round(
        self,
        server_round: int,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        options: Mapping[str, float],
        tensors: Mapping[str, Weights],
        state_key: str,
        partners: Sequence[str] | None = None,
    ) -> tuple[dict[str, jobs.RoundReply], list[Failure]]:
        """Train the round at ``partners`` (the round's sample; default: every partner)."""
        if tensors:  # config validation refuses such strategies in sites mode; this guards direct use
            raise ValueError(f"strategy tensors {sorted(tensors)} cannot travel to sites yet")
        bindings = {**self.bindings, "weights": weights_digest(weights)}
        secure = self.config.secure_aggregation.enabled

        def fetch(n: str) -> tuple[dict[str, Any], Weights]:  # the reply, then (in the clear) the update it names
            reply = self.artifacts.get_json(self.site_runs[n], layout.site_reply("round", server_round))
            update = {} if secure else self.artifacts.get_weights(self.site_runs[n], layout.site_update(server_round))
            return reply, update

        replies, failures = self._dispatch(
            "round",
            server_round,
            partners,
            bindings=bindings,
            fetch=fetch,
            options=dict(options),
            state_key=state_key,
        )
        out = {}
        if secure:  # the update stays at the site; its round keys came instead
            self.adverts = {server_round: {n: r["advert"] for n, (r, _) in replies.items()}}
            for n, (r, _) in replies.items():
                out[n] = jobs.RoundReply(Update(n, {}, int(r["n_samples"]), r["metrics"]), r["incoming_val"])
            return out, failures
        for n, (r, update_weights) in replies.items():
            update = SignedUpdate(
                n, update_weights, int(r["n_samples"]), r["metrics"], signature=signature_from_json(r.get("signature"))
            )
            out[n] = jobs.RoundReply(update, r["incoming_val"])
        return out, failures

    def finish(
        self,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        parity_task: int | None,
        parity_edges: Sequence[float],
        champion: Any,
        state_key: str = "default",
        server_round: int | None = None,
        local_only: bool = True,
    ) -> tuple[dict[str, jobs.FinalReport], list[Failure]]:
        """Final evaluation of the global model of ``server_round`` (default: the configured last round); the
        local-only baseline rides along in the same job (one worker start less) unless ``local_only`` is False.
        ``state_key`` (the run id, as in :meth:`round`) finds partners' private heads in their workspaces."""
        bindings = {**self.bindings, "weights": weights_digest(weights)}
        if champion:
            bindings["champion"] = weights_digest(champion.weights)
        server_round = self.config.federation.rounds if server_round is None else server_round
        self._finished[bindings["weights"]] = server_round
        out, failures = self._dispatch(
            "finish",
            server_round,
            bindings=bindings,
            state_key=state_key,
            parity_task=parity_task,
            parity_edges=list(parity_edges),
            champion_uri=champion.uri if champion else None,
            local_only=local_only and self.config.baselines.local_only,
        )
        if local_only:
            self._local_only = {
                n: (r["local_only"]["test"], r["local_only"]["curve"]) for n, r in out.items() if r.get("local_only")
            }
        reports = {n: jobs.FinalReport(**{k: v for k, v in r.items() if k != "local_only"}) for n, r in out.items()}
        return reports, failures

    def calibrate(
        self,
        step: str,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        payload: Mapping[str, Any],
        state_key: str = "default",
    ) -> tuple[dict[str, Any], list[Failure]]:
        """A calibration step at every partner (:class:`molfed.federated.calibration.CalibrationPool`) on the kept
        round's global weights (an artifact of this run already: the request binds their digest). The step's
        payload (the embedding domain, the calibration) is logged on the federation run and bound by digest too,
        never sent as a parameter. Replies are checked sums; under secure aggregation ``moments`` and ``scores``
        reply with round keys (kept in :attr:`adverts` for the secure sum) and None.

        Raises
        ------
        ValueError
            If ``weights`` are not a round's the sites finished (call :meth:`finish` first).
        """
        digest = weights_digest(weights)
        if digest not in self._finished:
            raise ValueError("calibrate the global weights of a round the sites finished (call finish first)")
        server_round = self._finished[digest]
        bindings = {**self.bindings, "weights": digest}
        if step != "moments":
            body = cal_wire.payload_to_json(step, payload)
            self.tracker.log_json(self.run_id, body, layout.calibration_payload(step))
            bindings["payload"] = json_digest(body)
        if step == "moments":
            shapes = cal.moments_layout(spec)
        else:
            shapes = cf.sums_layout(spec.task_names, spec.task_types, domain=payload.get("domain") is not None)
        secure = self.config.secure_aggregation.enabled and step != "measure"

        def fetch(n: str) -> Any:  # a malformed reply raises here: that partner's failure
            reply = self.artifacts.get_json(self.site_runs[n], layout.calibration_reply(step, server_round))
            if secure:
                wire.advert_from_json(reply["advert"])  # decodable, or this partner's failure
                return reply["advert"]
            return cal_wire.reply_from_json(step, reply, shapes)

        replies, failures = self._dispatch(
            "calibrate", server_round, bindings=bindings, fetch=fetch, step=step, state_key=state_key
        )
        if secure:  # the sums stay at the sites; their round keys came instead
            self.adverts = {0: replies}
            return {n: None for n in replies}, failures
        return replies, failures

    def local_only(self, spec: ModelSpec, init: Weights, scaling: Mapping[str, Sequence[float]]) -> dict[str, Any]:
        """Computed by each partner in its finish job (call :meth:`finish` first)."""
        return self._local_only

    def close(self) -> None:
        _ACTIVE.pop(self.run_id, None)
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None
        for run_id in self.site_runs.values():
            self.tracker.end_run(run_id)
