"""Create the Prefect work pools and deployments of a federation (``molfed deploy``).

- ``federated-training/federated-training`` on pool ``molfed-coordinator``: its parameter is the pydantic config,
  so the Prefect UI renders a form with defaults, descriptions and bounds; the config file becomes its default.
  An optional cron schedule (``schedule:`` in the config) retrains periodically.
- In sites mode, per partner: pool ``partner-<name>`` and deployments ``partner-job/partner-<name>`` (prepare,
  train, finish) and ``secagg-job/partner-<name>`` (secure-aggregation steps). They only give the coordinator's
  flow runs a pool: the partner's ``molfed site-agent`` serves it and runs its own installed code for signed
  requests, never the deployment's entrypoint.

Code is pulled from this checkout (``from_source`` with a local directory): every worker must see the same
checkout path (or point ``source`` at a git URL for a real consortium).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron
from prefect.workers.process import ProcessWorker

from molfed.config import RunConfig
from molfed.startup import store_uri
from tasks.sites import partner_pool

REPO_ROOT = Path(__file__).resolve().parents[1]
COORDINATOR_POOL = "molfed-coordinator"
TRAINING_DEPLOYMENT = "federated-training/federated-training"


def ensure_pool(name: str) -> None:
    """Create a process work pool unless it exists."""
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(
            WorkPoolCreate(name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template())
        )


def deployed_config(config: RunConfig, *, cwd: Path | None = None) -> RunConfig:
    """``config`` as a deployment's default: what ``molfed run`` would resolve from ``cwd`` (default: here) made
    absolute — the MLflow store (``tracking.tracking_uri``) and, in local mode, each partner's default workspace —
    because the coordinator agent runs the flow from another folder."""
    root = (cwd or Path.cwd()).resolve()
    tracking = config.tracking.model_copy(update={"tracking_uri": store_uri(config.tracking.tracking_uri, root=root)})
    partners = config.partners
    if config.mode == "local":
        partners = [p.model_copy(update={"workspace": (root / config.workspace_for(p)).resolve()}) for p in partners]
    return config.model_copy(update={"tracking": tracking, "partners": partners})


def form_parameters(config: RunConfig) -> dict[str, object]:
    """The deployment's parameters: the config as JSON without the fields the form does not show (internal)."""
    return {"config": config.model_dump(mode="json", exclude={"tracking": {"parent_run_id"}})}


def deploy(config: RunConfig, *, source: Path = REPO_ROOT) -> list[str]:
    """Create pools and deployments for ``config``; return the deployment names."""
    ensure_pool(COORDINATOR_POOL)
    schedules = []
    if config.schedule is not None:
        schedules = [Cron(config.schedule.cron, timezone=config.schedule.timezone, active=config.schedule.active)]
    training = flow.from_source(source=str(source), entrypoint="flows/federated_training.py:federated_training")
    training.deploy(
        name="federated-training",
        work_pool_name=COORDINATOR_POOL,
        parameters=form_parameters(config),
        schedules=schedules,
        description="Federated GNN training across partners (molfed).",
        tags=["molfed", config.mode],
        print_next_steps=False,
        ignore_warnings=True,  # Prefect suggests .serve or a worker: molfed deploy prints the real next steps
    )
    names = [TRAINING_DEPLOYMENT]
    if config.mode == "sites":
        job = flow.from_source(source=str(source), entrypoint="flows/partner_job.py:partner_job")
        secagg = flow.from_source(source=str(source), entrypoint="flows/partner_job.py:secagg_job")
        for partner in config.partners:
            pool = partner_pool(partner.name)
            ensure_pool(pool)
            job.deploy(
                name=pool, work_pool_name=pool, tags=["molfed", "partner"], print_next_steps=False, ignore_warnings=True
            )
            secagg.deploy(
                name=pool, work_pool_name=pool, tags=["molfed", "partner"], print_next_steps=False, ignore_warnings=True
            )
            names += [f"partner-job/{pool}", f"secagg-job/{pool}"]
    return names
