"""A partner's job in sites mode, run by the partner's own Prefect worker inside the partner's network.

The worker's environment names the partner's site config (``MOLFED_SITE_CONFIG``: library path, workspace,
columns) and its MLflow credentials; the flow's parameters are ids and numbers only. Weights and the plan come
from the federation run's artifacts; the reply goes to this partner's ``site-<name>`` run.
"""

from __future__ import annotations

import os

import torch
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict

from molfed.config import RunConfig, SiteConfig, site_run_config
from molfed.errors import ConfigError
from molfed.federated import jobs
from molfed.federated.secure import site as secagg
from molfed.federated.site_jobs import errors_stay_at_site, this_site
from molfed.models.model import ModelSpec
from molfed.tracking import Tracker, load_model_parts, resolve_tracking_uri
from tasks import integrity
from tasks.partner import finish_from_config, load_partner, local_only_from_config, round_from_config
from tasks.sites import reply_path, update_path


class SiteJob(BaseModel):
    """What the coordinator asks of a partner: ids, an action and numbers. Never data."""

    model_config = ConfigDict(extra="forbid")
    partner: str
    action: str
    parent_run_id: str
    site_run_id: str
    server_round: int = 0
    options: dict[str, float] = {}
    parity_task: int | None = None
    parity_edges: list[float] = []
    champion_uri: str | None = None
    state_key: str = "default"
    local_only: bool = False


@flow(name="partner-job", persist_result=False, log_prints=False)
def partner_job(job: SiteJob) -> None:
    logger = get_run_logger()
    site = this_site(job.partner)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    logger.info("partner %s: %s (round %d)", job.partner, job.action, job.server_round)
    with errors_stay_at_site(site, f"{job.action} round {job.server_round}"):
        _run(job, site)


def _run(job: SiteJob, site: SiteConfig) -> None:
    tracker = Tracker(resolve_tracking_uri(None), None)
    federation = RunConfig.model_validate(tracker.download_json(job.parent_run_id, "federation/config.json"))
    config = site_run_config(federation, site)
    data = load_partner(config, config.partners[0])
    reply: dict
    if job.action == "prepare":
        prepared = jobs.prepare(data)
        reply = {"summary": _asdict(prepared.summary), "moments": prepared.moments}
    else:
        plan = tracker.download_json(job.parent_run_id, "federation/plan.json")
        spec, scaling = ModelSpec.from_dict(plan["spec"]), plan["scaling"]
        if job.action == "round":
            weights = tracker.download_weights(job.parent_run_id, f"global_model/round_{job.server_round - 1:04d}.pt")
            out = round_from_config(
                config, data, spec, weights, scaling, job.server_round, job.options, None, job.state_key
            )
            at = {"run_id": job.parent_run_id, "server_round": job.server_round}
            advert = None
            if federation.secure_aggregation.enabled:  # the update stays here; its round keys travel instead
                out, advert = integrity.hold_at_site(federation, config, out, **at)
            else:
                out = integrity.seal(config, job.partner, out, **at)
                tracker.log_weights(job.site_run_id, out.update.weights, update_path(job.server_round))
            reply = {
                "n_samples": out.update.n_samples,
                "metrics": dict(out.update.metrics),
                "incoming_val": out.incoming_val,
                "signature": integrity.signature_json(out.update),
                "advert": advert,
            }
        elif job.action == "finish":
            secagg.forget(site.workspace, job.parent_run_id)  # what a round this partner dropped out of left behind
            weights = tracker.download_weights(job.parent_run_id, f"global_model/round_{job.server_round:04d}.pt")
            champion = None
            if job.champion_uri:
                c_spec, c_weights, c_scaling = load_model_parts(job.champion_uri, tracker.tracking_uri)
                champion = (c_spec, c_weights, c_scaling)
            reply = finish_from_config(
                config, site.name, spec, weights, scaling, job.parity_task, job.parity_edges, champion, job.state_key
            ).to_json()
            if job.local_only:
                init = tracker.download_weights(job.parent_run_id, "global_model/round_0000.pt")
                test, curve = local_only_from_config(config, data, spec, init, scaling)
                reply["local_only"] = {"test": test, "curve": curve}
        else:
            raise ConfigError(f"unknown action {job.action!r}; choose from ['finish', 'prepare', 'round']")
    tracker.log_json(job.site_run_id, reply, reply_path(job.action, job.server_round))


def _asdict(obj: object) -> dict:
    from dataclasses import asdict

    return asdict(obj)  # type: ignore[call-overload]
