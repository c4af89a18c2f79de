"""Leave-one-partner-out contribution estimate: one extra federation per partner, each a subflow of the run.

Optional (``baselines.contributions``) because it costs one federation per partner. Each extra federation is
nested under the main MLflow run (``molfed.kind = leave-one-out``) and registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from molfed import layout, reporting
from molfed.config import RunConfig
from molfed.federated.sampling import sample_size
from molfed.federated.value import contributions
from molfed.tracking import Tracker

KIND = "leave-one-out"


def leave_one_out_config(config: RunConfig, partner: str, parent_run_id: str) -> RunConfig:
    """The federation without ``partner``: same seed, budget and strategy; baselines, champion comparison and
    model registration off; quorum and sampling minimums capped to the partners left; nested under
    ``parent_run_id`` in MLflow.

    Raises
    ------
    ValueError
        If ``partner`` is unknown or is the only partner.
    """
    names = [p.name for p in config.partners]
    if partner not in names or len(names) < 2:
        raise ValueError(f"got partner {partner!r}, expected one of {names} (and at least 2 partners)")
    partners = [p for p in config.partners if p.name != partner]
    f = config.federation
    fit_min = min(f.min_fit_partners, len(partners))
    quorum = (
        None if f.min_partners is None else min(f.min_partners, sample_size(len(partners), f.fraction_fit, fit_min))
    )
    raw = config.model_dump()
    raw.update(
        name=f"{config.name}-without-{partner}",
        partners=[p.model_dump() for p in partners],
        federation={**raw["federation"], "min_fit_partners": fit_min, "min_partners": quorum},
        baselines={"local_only": False, "pooled": False, "contributions": False},
        champion={**raw["champion"], "enabled": False},
        tracking={**raw["tracking"], "registered_model": None, "parent_run_id": parent_run_id},
        schedule=None,
    )
    return RunConfig.model_validate(raw)


def leave_one_out(
    config: RunConfig,
    tracker: Tracker,
    run_id: str,
    full: Mapping[str, float],
    metric: str,
    sizes: Mapping[str, int],
    federation: Callable[..., Any],
) -> str:
    """Run the federation without each partner in turn; log ``contribution.<k>``, ``contributions.json`` and
    ``contributions.md`` on ``run_id``; return the Markdown table ('' with fewer than 2 partners).

    ``full`` holds each partner's test ``metric`` of the federation of all partners; a partner whose metric is
    undefined (e.g. ROC-AUC on a one-class test split) is left out of the comparison. ``federation`` is the
    federated-training flow (passed in by the flow itself: each estimate is its subflow).
    """
    if len(full) < 2:
        return ""
    without: dict[str, dict[str, float]] = {}
    for k in full:
        sub = leave_one_out_config(config, k, run_id)
        result = federation.with_options(flow_run_name=f"{config.name}-without-{k}")(sub)
        tracker.set_tags(result["run_id"], {"molfed.kind": KIND, "molfed.without": k})
        rows = [r for r in result["rows"] if r["partner"] in full and r["federated"] is not None]
        without[k] = {r["partner"]: r["federated"] for r in rows}
    pairwise, overall = contributions(full, without, metric, sizes)
    tracker.log_metrics(run_id, {f"contribution.{k}": v for k, v in overall.items()})
    table = reporting.contributions_markdown(pairwise, overall, metric)
    tracker.log_json(run_id, {"metric": metric, "pairwise": pairwise, "overall": overall}, layout.CONTRIBUTIONS)
    tracker.log_text(run_id, table, "contributions.md")
    return table
