"""Leave-one-partner-out contribution estimate: one extra federation per partner, each a subflow of the run.

Optional (``baselines.contributions``) because it costs one federation per partner. Each extra federation is
nested under the main MLflow run (``molfed.kind = leave-one-out``) and registers nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from molfed import reporting
from molfed.config import RunConfig
from molfed.federated.value import contributions, leave_one_out_config
from molfed.tracking import Tracker

KIND = "leave-one-out"


def leave_one_out(
    config: RunConfig,
    tracker: Tracker,
    run_id: str,
    full: Mapping[str, float],
    metric: str,
    sizes: Mapping[str, int],
) -> str:
    """Run the federation without each partner in turn; log ``contribution.<k>``, ``contributions.json`` and
    ``contributions.md`` on ``run_id``; return the Markdown table ('' with fewer than 2 partners).

    ``full`` holds each partner's test ``metric`` of the federation of all partners; a partner whose metric is
    undefined (e.g. ROC-AUC on a one-class test split) is left out of the comparison.
    """
    from flows.federated_training import federated_training  # the flow calls this module

    if len(full) < 2:
        return ""
    without: dict[str, dict[str, float]] = {}
    for k in full:
        sub = leave_one_out_config(config, k, run_id)
        result = federated_training.with_options(flow_run_name=f"{config.name}-without-{k}")(sub)
        tracker.set_tags(result["run_id"], {"molfed.kind": KIND, "molfed.without": k})
        rows = [r for r in result["rows"] if r["partner"] in full and r["federated"] is not None]
        without[k] = {r["partner"]: r["federated"] for r in rows}
    pairwise, overall = contributions(full, without, metric, sizes)
    tracker.log_metrics(run_id, {f"contribution.{k}": v for k, v in overall.items()})
    table = reporting.contributions_markdown(pairwise, overall, metric)
    tracker.log_json(run_id, {"metric": metric, "pairwise": pairwise, "overall": overall}, "contributions.json")
    tracker.log_text(run_id, table, "contributions.md")
    return table
