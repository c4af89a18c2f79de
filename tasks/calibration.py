"""The flow's calibration step: calibrate the kept model at the partners, log what was measured, hand the
calibration to the logged model (:mod:`molfed.federated.calibration`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from molfed import plots
from molfed.config import RunConfig
from molfed.federated import calibration as cal
from molfed.federated import conformal as cf
from molfed.federated.secure.local import LocalTransport, forget
from molfed.federated.secure.rounds import Transport
from molfed.federated.types import Weights
from molfed.models.model import ModelSpec
from molfed.tracking import Tracker
from tasks import integrity
from tasks.secagg_sites import SiteTransport

CALIBRATION_JSON = "calibration/calibration.json"
COVERAGE_PLOT = "plots/calibration_coverage.png"
CALIBRATION_REPORT = "calibration/report.md"


def summer(config: RunConfig, run_id: str) -> cal.Summer:
    """Plain sums, or under ``secure_aggregation`` a secure sum of what partners hold (in this process in local
    mode; at their sites in sites mode, each protocol step a job there)."""
    s = config.secure_aggregation
    if not s.enabled:
        return cal.plain_sum
    signing = config.integrity.signing
    keys = integrity.public_keys(config) if signing else None
    transport: Transport
    if config.mode == "sites":
        transport = SiteTransport(run_id)
    else:
        loader = functools.partial(integrity._signing_key, config) if signing else None
        transport = LocalTransport(signing_key=loader, peer_keys=keys, scale=2**s.scale_bits)
    return cal.secure_summer(
        transport, run_id=run_id, threshold=integrity.secure_threshold(config), scale=2**s.scale_bits, public_keys=keys
    )


def calibrate(
    pool: cal.CalibrationPool,
    config: RunConfig,
    tracker: Tracker,
    run_id: str,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
) -> tuple[cf.Calibration | None, str]:
    """Calibrate the kept model when ``calibration`` is active; log metrics, the calibration (JSON, aggregates only)
    and the coverage plot. Returns the calibration (None when off) and a Markdown section for the report."""
    c = config.calibration
    if not c.active(config.mode):
        return None, ""
    try:
        result = cal.calibrate(
            _Bound(pool, run_id),
            spec=spec,
            weights=weights,
            scaling=scaling,
            levels=c.levels,
            method=c.method,
            domain_level=c.domain_level,
            quorum=config.quorum,
            summer=summer(config, run_id),
        )
    finally:
        for step in cal.STEPS:
            forget(cal.secure_key(run_id, step))
    calibration = result.calibration
    tracker.log_metrics(run_id, cal.metrics(result.measured, calibration))
    tracker.set_tags(run_id, {"molfed.calibration": f"{c.method}, {c.source}, levels {list(c.levels)}"})
    for f in result.failures:
        tracker.set_tags(run_id, {f"calibration.failed.{f.partner}": f.reason[:500]})
    tracker.log_json(run_id, asdict(calibration), CALIBRATION_JSON)
    rows = cal.coverage_table(result.measured, calibration)
    fig = plots.coverage_plot(rows)
    tracker.log_figure(run_id, fig, COVERAGE_PLOT)
    plots.close(fig)
    text = markdown(rows, cal.metrics(result.measured, calibration), calibration)
    tracker.log_text(run_id, text, CALIBRATION_REPORT)
    return calibration, text


def markdown(rows: Sequence[Mapping[str, object]], metrics: Mapping[str, float], calibration: cf.Calibration) -> str:
    """The run report's calibration section: coverage per partner and level, widths, domain-flag rate."""
    levels = calibration.levels
    head = " | ".join(f"{cf.percent(a)} %" for a in levels)
    lines = [
        f"\n## Calibration ({calibration.method})\n",
        "Empirical coverage of the conformal intervals/sets on each partner's test split:\n",
        f"| partner | labels | {head} | out of domain |",
        "|---|---|" + "---|" * len(levels) + "---|",
    ]
    for partner in dict.fromkeys(str(r["partner"]) for r in rows):
        mine = {float(r["level"]): r for r in rows if str(r["partner"]) == partner}  # type: ignore[arg-type]
        n = next(iter(mine.values()))["n"]
        cells = " | ".join(f"{float(mine[a]['coverage']):.3f}" for a in levels)  # type: ignore[arg-type]
        key = "test_out_of_domain_rate" + ("" if partner == "all" else f".{partner}")
        rate = f"{metrics[key]:.3f}" if key in metrics else "-"
        lines.append(f"| {partner} | {n} | {cells} | {rate} |")
    for task in calibration.tasks:
        if task.type == "regression":
            widths = ", ".join(
                f"{cf.percent(a)} %: ±{w:.3g}" if w is not None else f"{cf.percent(a)} %: unbounded"
                for a, w in zip(levels, task.half_widths, strict=True)
            )
            lines.append(f"\n{task.name}: interval half-widths {widths} (from {task.n} calibration labels)")
        else:
            lines.append(f"\n{task.name}: temperature {task.temperature:.3g} (from {task.n} calibration labels)")
    return "\n".join(lines) + "\n"


class _Bound:
    """The pool with the run id as partners' state key (mondrian calibrations and secure sums are keyed by it)."""

    def __init__(self, pool: object, run_id: str):
        self.pool, self.run_id = pool, run_id

    def calibrate(self, step, spec, weights, scaling, payload):  # type: ignore[no-untyped-def]
        return self.pool.calibrate(step, spec, weights, scaling, payload, self.run_id)  # type: ignore[attr-defined]
