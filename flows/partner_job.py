"""The deployments ``partner-job/partner-<name>`` and ``secagg-job/partner-<name>`` exist so that the coordinator can
create flow runs on a partner's pool; their code is never what runs at a site.

A partner serves its pool with ``molfed site-agent``, which reads only a flow run's (signed) parameters and runs
molfed's own job code installed at the site (``flows/site_agent.py``, ``flows/site_runner.py``). If a plain Prefect
worker ever picked such a run up, this flow refuses instead of touching anything.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.sites import PARTNER_FLOW, SECAGG_FLOW

_REFUSAL = "sites-mode jobs run only under `molfed site-agent`, never in a Prefect worker"


@flow(name=PARTNER_FLOW, persist_result=False, log_prints=False)
def partner_job(job: dict[str, Any]) -> None:
    raise RuntimeError(_REFUSAL)


@flow(name=SECAGG_FLOW, persist_result=False, log_prints=False)
def secagg_job(job: dict[str, Any]) -> None:
    raise RuntimeError(_REFUSAL)
