"""Tasks for the value-of-federation report: heterogeneity statistics, fairness, the per-partner bar chart.

Partner-side here is only :func:`scaffold_digests` (private options: its keyed digests are never persisted by
Prefect and never logged; the coordinator reduces them to overlap counts at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task

from molfed import layout, plots, reporting
from molfed.config import RunConfig
from molfed.data.cache import featurize_library
from molfed.federated import overlap, value
from molfed.preparation import standardize_options
from molfed.tracking import Tracker
from tasks._options import PRIVATE

CHART = "plots/value_of_federation.png"


@task(name="scaffold-digests", task_run_name="scaffold-digests-{name}", **PRIVATE)
def scaffold_digests(config: RunConfig, name: str) -> frozenset[str]:
    """Partner side (local mode): keyed digests of the partner's ring scaffolds (from its workspace cache)."""
    cfg = next(x for x in config.partners if x.name == name)
    assert cfg.path is not None, "local mode only"
    library = featurize_library(
        cfg.path,
        config.workspace_for(cfg),
        smiles_column=cfg.smiles_column,
        label_columns=[cfg.column_for(t.name) for t in config.tasks],
        task_types=[t.type for t in config.tasks],
        standardize=standardize_options(config),
        duplicates=config.data.duplicates,
        partner=name,
    )
    return overlap.scaffold_digests(library.scaffolds, overlap.local_salt())


def log_heterogeneity(
    tracker: Tracker, run_id: str, config: RunConfig, moments: Mapping[str, Mapping[str, Sequence[float]]]
) -> str:
    """Label count / mean / std per partner and task (from the scaling moments) and, in local mode, scaffold
    overlap from keyed digests; logged as metrics and ``heterogeneity.json``. Returns the overlap as Markdown."""
    stats = reporting.label_metrics(moments, [t.name for t in config.tasks])
    shared = None
    if config.mode == "local":
        futures = {n: scaffold_digests.submit(config, n) for n in moments}
        shared = overlap.overlap({n: f.result() for n, f in futures.items()})
        stats.update(overlap.overlap_metrics(shared))
    tracker.log_metrics(run_id, stats)
    tracker.log_json(run_id, stats, layout.HETEROGENEITY)
    return reporting.overlap_markdown(shared)


def report_value(
    tracker: Tracker,
    run_id: str,
    test: value.TestMetrics,
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    kinds: Sequence[str],
    heterogeneity: str = "",
    contributions: str = "",
) -> tuple[str, str]:
    """Fairness table, bar chart (``plots/value_of_federation.png``), ``results.md`` and ``fairness.json``.

    Returns ``(results markdown, extra markdown for the Prefect report)``; the extra part embeds the chart as a
    data URI (the Prefect UI renders those; it cannot reach MLflow's local artifact files) and names its MLflow path.
    """
    fair = value.fairness(test, metric, kinds)
    tracker.log_json(run_id, fair, layout.FAIRNESS)
    fig = plots.value_bars(rows, metric, kinds)
    tracker.log_figure(run_id, fig, CHART)
    image = plots.png_data_uri(fig)
    plots.close(fig)
    fairness_md = reporting.fairness_markdown(fair, metric)
    hetero_md = heterogeneity
    results = "\n".join([reporting.results_markdown(rows, metric, kinds), fairness_md, contributions, hetero_md])
    tracker.log_text(run_id, results, "results.md")
    extra = f"\n![value of federation]({image})\n\nChart in MLflow: `{CHART}` of this run.\n\n{fairness_md}\n"
    return results, extra + contributions + hetero_md
