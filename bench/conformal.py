"""Federated vs pooled-calibration conformal intervals on scaffold-split partners of the shipped public sets.

Per (set, seed): the set is cut by Murcko scaffold into partner libraries (as ``bench/science.py`` does), each partner
holds out ``calibration.fraction`` of its training split by scaffold, the product's round loop trains the schema's
default recipe (:func:`molfed.federated.inprocess.run_federation`, best-validation round kept) and the kept model is
calibrated through the product's three partner steps (:func:`molfed.federated.calibration.calibrate`: summed
histograms). Side by side on the same model and the same calibration molecules:

* ``federated``: the shipped calibration (summed fixed-bin histograms, quantile rounded up to its bin);
* ``pooled``: exact split conformal on the pooled calibration scores (all partners' calibration molecules in one
  place: the reference a federation cannot compute);
* ``mondrian``: each partner's own exact split-conformal quantile (its own calibration molecules only);
* ``val``: exact pooled quantile on the validation splits instead (no held-out molecules, but the round was
  selected on them).

Coverage and mean width are measured on each partner's own test split and on their union, at every level. The
summary gives, per set, level and method: mean +- sd over seeds of the union's coverage, the share of (partner,
seed) coverages inside the binomial 95 % band of the nominal level on that partner's test size, the mean width and
the federated / pooled width ratio (mean and max over seeds). Writes ``rows.csv`` and ``summary.txt`` under
``--out``, and the resolved recipe (model, train, federation and calibration settings) as ``recipe.json``; a rerun
with the same ``--out`` skips the (set, partners, seed) cells already there (and keeps the first recipe: give a
new ``--out`` when the schema's defaults change).

    nice -n 19 .venv/bin/python bench/conformal.py --quick
    nice -n 19 .venv/bin/python bench/conformal.py --sets freesolv --seeds 20 --out bench-out/conformal
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molfed.config import apply_overrides, parse_config
from molfed.data.partition import partition_dataset
from molfed.data.public_sets import load_public_set
from molfed.federated import calibration as cal
from molfed.federated import conformal as cf
from molfed.federated import coordinator as coord
from molfed.federated import partner as p
from molfed.federated.inprocess import InProcessPool, run_federation
from molfed.federated.strategies import build_strategy
from molfed.preparation import prepare_partner_data, train_settings

METHODS = ("federated", "pooled", "mondrian", "val")
FIELDS = ("set", "partners", "seed", "partner", "level", "method", "coverage", "n", "width")
REGRESSION_SETS = ("freesolv", "solubility", "chembl2321810")


def run_cell(set_name: str, seed: int, n_partners: int, root: Path, overrides: Sequence[str]) -> list[dict[str, Any]]:
    """One federation and its calibrations; rows of coverage and width per partner, union, level and method."""
    pset = load_public_set(set_name)
    names = [f"p{i}" for i in range(n_partners)]
    paths = partition_dataset(
        list(pset.smiles),
        list(pset.labels),
        root / "data",
        method="scaffold",
        n_partners=n_partners,
        seed=seed,
        label_column=pset.label,
        names=names,
    )
    raw = {
        "name": "conformal",
        "seed": seed,
        "tasks": [{"name": pset.label, "type": pset.task_type}],
        "partners": [{"name": n, "path": str(path), "workspace": str(root / "ws" / n)} for n, path in paths.items()],
    }
    config = parse_config(apply_overrides(raw, overrides), source="bench")
    recipe = config.model_dump(mode="json", include={"model", "train", "federation", "calibration"})
    recipe_file = root.parent / "recipe.json"  # the cell's folder sits in --out's temporary parent; see main()
    if not recipe_file.exists():
        recipe_file.write_text(json.dumps(recipe, indent=1))
    c = config.calibration
    partners = [prepare_partner_data(config, x) for x in config.partners]  # as a run: hold-out carved
    spec = coord.model_spec(**config.model.model_dump(), task_names=[pset.label], task_types=[pset.task_type])
    fed = config.federation
    settings = train_settings(config)
    result = run_federation(
        partners,
        spec=spec,
        init_weights=coord.initial_weights(spec, seed),
        strategy=build_strategy(fed.strategy, **fed.strategy_options),
        settings=settings,
        rounds=fed.rounds,
        seed=seed,
        select=fed.selection == "best_val",
        patience=fed.patience,
    )
    weights, scaling = result.selected_weights, result.scaling
    pool = InProcessPool(partners, settings=settings, seed=seed)
    shipped = cal.calibrate(
        pool,
        spec=spec,
        weights=weights,
        scaling=scaling,
        levels=c.levels,
        method="federated",
        domain_level=c.domain_level,
        quorum=len(partners),
    ).calibration
    model = p.materialize(spec, weights, scaling)
    residual = {d.name: {s: _residuals(model, d.splits[s]) for s in ("cal", "val", "test")} for d in partners}
    pooled_cal = np.concatenate([r["cal"] for r in residual.values()])
    pooled_val = np.concatenate([r["val"] for r in residual.values()])
    rows = []
    for i, level in enumerate(c.levels):
        fed_width = shipped.tasks[0].half_widths[i]
        half = {
            "federated": {n: fed_width for n in residual},
            "pooled": {n: cf.sample_quantile(pooled_cal, level) for n in residual},
            "mondrian": {n: cf.sample_quantile(r["cal"], level) for n, r in residual.items()},
            "val": {n: cf.sample_quantile(pooled_val, level) for n in residual},
        }
        for method in METHODS:
            hits = total = 0
            widths = []
            for n, r in residual.items():
                w = math.inf if half[method][n] is None else float(half[method][n])  # type: ignore[arg-type]
                covered = int((r["test"] <= w).sum())
                rows.append(_row(set_name, n_partners, seed, n, level, method, covered, len(r["test"]), 2 * w))
                hits, total = hits + covered, total + len(r["test"])
                widths += [2 * w] * len(r["test"])
            rows.append(_row(set_name, n_partners, seed, "all", level, method, hits, total, float(np.mean(widths))))
    return rows


def _residuals(model: Any, graphs: Sequence[Any]) -> np.ndarray:
    """Absolute residuals in the task's units (single-task sets)."""
    y, _, pred, _ = cal.outputs(model, graphs)
    keep = ~np.isnan(y[:, 0])
    return np.abs(y[keep, 0] - pred[keep, 0])


def _row(
    set_name: str, partners: int, seed: int, partner: str, level: float, method: str, hit: int, n: int, width: float
) -> dict:
    return {
        "set": set_name,
        "partners": partners,
        "seed": seed,
        "partner": partner,
        "level": level,
        "method": method,
        "coverage": hit / n if n else math.nan,
        "n": n,
        "width": width,
    }


def in_band(coverage: float, level: float, n: int) -> bool:
    """Whether ``coverage`` on ``n`` labels lies in the binomial 95 % band of an exact ``level``."""
    if n == 0:
        return True
    half = 1.96 * math.sqrt(level * (1 - level) / n)
    return level - half - 1 / n <= coverage <= level + half + 1 / n


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, partners, level, method): union coverage mean/sd over seeds, the worst partner's coverage (mean over
    seeds), share of (partner, seed) coverages in the binomial band, mean width of the union, width / pooled width
    (mean, max over seeds)."""

    def key(r: Mapping[str, Any]) -> tuple[str, int, float, str]:
        return str(r["set"]), int(r["partners"]), float(r["level"]), str(r["method"])

    groups: dict[tuple[str, int, float, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = []
    for k in sorted(groups, key=lambda k: (k[0], k[1], k[2], METHODS.index(k[3]))):
        set_name, n_partners, level, method = k
        union = [r for r in groups[k] if r["partner"] == "all"]
        parts = [r for r in groups[k] if r["partner"] != "all"]
        pooled = {
            int(r["seed"]): float(r["width"])
            for r in groups[(set_name, n_partners, level, "pooled")]
            if r["partner"] == "all"
        }
        cov = np.array([float(r["coverage"]) for r in union])
        ratios = np.array([float(r["width"]) / pooled[int(r["seed"])] for r in union])
        worst: dict[int, float] = {}
        for r in parts:
            worst[int(r["seed"])] = min(worst.get(int(r["seed"]), 1.0), float(r["coverage"]))
        out.append(
            {
                "set": set_name,
                "partners": n_partners,
                "level": level,
                "method": method,
                "seeds": len(union),
                "coverage": float(cov.mean()),
                "coverage_sd": float(cov.std(ddof=1)) if len(cov) > 1 else 0.0,
                "worst": float(np.mean(list(worst.values()))) if worst else math.nan,
                "in_band": sum(in_band(float(r["coverage"]), level, int(r["n"])) for r in parts) / max(len(parts), 1),
                "width": float(np.mean([float(r["width"]) for r in union])),
                "ratio": float(np.mean(ratios)),
                "ratio_max": float(np.max(ratios)),
            }
        )
    return out


def format_summary(summary: Sequence[Mapping[str, Any]]) -> str:
    head = "| set | partners | level | method | seeds | union coverage (mean ± sd) | worst partner | partners in band |"
    lines = [head + " mean width | width / pooled (mean, max) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(
            f"| {s['set']} | {s['partners']} | {s['level']:.2f} | {s['method']} | {s['seeds']} | {s['coverage']:.3f} ± "
            f"{s['coverage_sd']:.3f} | {s['worst']:.3f} | {s['in_band']:.0%} | {s['width']:.3g} | "
            f"{s['ratio']:.3f}, {s['ratio_max']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(REGRESSION_SETS), choices=REGRESSION_SETS)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    parser.add_argument("--partners", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="every set, 3 partners, 3 seeds (~6 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.partners = 3, [3]
    out: Path = args.out or Path("bench-out") / ("conformal-quick" if args.quick else "conformal")
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    path = out / "rows.csv"
    rows: list[dict[str, Any]] = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(r["set"], int(r["partners"]), int(r["seed"])) for r in rows}
    started = time.perf_counter()
    for set_name in args.sets:
        for n_partners in args.partners:
            for seed in range(args.seeds):
                if (set_name, n_partners, seed) in done:
                    continue
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory(dir=out) as tmp:  # run_cell writes out/recipe.json once
                    new = run_cell(set_name, seed, n_partners, Path(tmp), args.overrides)
                with path.open("a", newline="") as fh:
                    writer = csv.DictWriter(fh, FIELDS)
                    if fh.tell() == 0:
                        writer.writeheader()
                    writer.writerows(new)
                rows += new
                u90 = next(r for r in new if (r["partner"], r["method"], r["level"]) == ("all", "federated", 0.9))
                took = time.perf_counter() - t0
                print(f"{set_name} {n_partners}p seed {seed}: fed 90 % union {u90['coverage']:.3f} ({took:.0f} s)")
    text = format_summary(summarize(rows))
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
