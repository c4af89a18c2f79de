"""A partner's secure-aggregation step in sites mode, run by the partner's own worker (deployment
``secagg-job/partner-<name>``, same pool as its training jobs).

The job's parameters are protocol messages only (the round's roster of public keys, the encrypted shares addressed
to this partner, the survivor names); its reply (encrypted shares, the signed masked vector, or share reveals) goes
to the partner's ``site-<name>`` MLflow run. The round's secrets and the held update stay in the partner's
workspace (:mod:`molfed.federated.secure.site`). One such job per step and round starts a fresh process, so this
module imports only Prefect, numpy and cryptography: no torch, PyG, RDKit or MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from molfed.errors import ConfigError
from molfed.federated import keys
from molfed.federated.secure import site as secagg
from molfed.federated.secure import wire
from molfed.federated.site_jobs import errors_stay_at_site, this_site
from molfed.site_artifacts import reply_path, upload_json

SECAGG_FLOW = "secagg-job"


class SecAggJob(BaseModel):
    """One protocol step asked of a partner: ids, public keys, ciphertexts and names. Never data or weights."""

    model_config = ConfigDict(extra="forbid")
    partner: str
    action: Literal["share_keys", "mask", "reveal"]
    parent_run_id: str
    site_run_id: str
    server_round: int
    roster: dict[str, dict[str, str | None]] = {}
    inbox: list[dict[str, str]] = []
    survivors: list[str] = []


@flow(name=SECAGG_FLOW, persist_result=False, log_prints=False)
def secagg_job(job: SecAggJob) -> None:
    site = this_site(job.partner)
    with errors_stay_at_site(site, f"secure aggregation {job.action} round {job.server_round}"):
        reply = step(job, site.workspace)
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ConfigError("MLFLOW_TRACKING_URI is not set: sites mode needs the federation's tracking server")
        upload_json(uri, job.site_run_id, reply_path(job.action, job.server_round), reply)


def step(job: SecAggJob, workspace: Path) -> dict[str, Any]:
    """Run ``job``'s protocol step against the state in ``workspace``; return the JSON reply."""
    run_id, server_round = job.parent_run_id, job.server_round
    if job.action == "share_keys":
        roster = {n: wire.advert_from_json(a) for n, a in job.roster.items()}
        shares = secagg.share_keys(workspace, roster, run_id=run_id, server_round=server_round)
        return {"shares": [wire.share_to_json(s) for s in shares]}
    if job.action == "mask":
        inbox = [wire.share_from_json(s) for s in job.inbox]
        masked, signature = secagg.mask(
            workspace,
            inbox,
            load_key=lambda: keys.load_signing_key(workspace),
            run_id=run_id,
            server_round=server_round,
        )
        return {"masked": wire.masked_to_json(masked, signature)}
    return {
        "reveal": wire.reveal_to_json(secagg.reveal(workspace, job.survivors, run_id=run_id, server_round=server_round))
    }
