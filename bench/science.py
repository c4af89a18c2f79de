"""Federated vs pooled vs local-only on scaffold-split partners of shipped public sets, over seeds, per recipe.

For each set (:mod:`molfed.data.public_sets`), partner count and seed, the set is cut by Murcko scaffold into
partner libraries (``partition_dataset(method="scaffold")``) and each recipe runs the product's round loop
(:func:`molfed.federated.inprocess.run_federation`, the engine ``molfed run`` drives). A recipe is a list of
``--set`` overrides applied to a config that names only partners and tasks, validated by ``molfed.config`` exactly as
``molfed run`` validates a YAML file: the ``default`` recipe is the schema's defaults, nothing hand-copied. The
references get the same budget and seed as the flow gives them (``train_alone``, which ``local_only_baseline`` and
``pooled_baseline`` call, with each partner's test split measured every round as well).

Every round's validation and test metrics are kept (federated: the run log's global weights of each round), so each
model is reported twice: at the last round (``federation.selection: last``) and at the round the product keeps by
default (``best_val``): the first round with the best validation value of the headline metric, combined over the
partners' validation splits as the engine combines it for federated and pooled, the partner's own for local-only
(the rule of ``molfed.federated.engine.Best`` and ``baselines.Selection``).

Per (set, partners, recipe, selection) it prints mean +- sd and median over seeds of federated / pooled on all
partners' test splits (RMSE over their union; ROC-AUC the size-weighted mean of partners' AUCs, as the run report
computes its "all partners" row), and the share of partners whose federated model beats their local-only model on
their own test split. Writes ``results.csv`` (one row per partner and "all partners"), ``curves.csv`` (per round),
``summary.txt`` and ``science.png`` under ``--out``; results are appended as each run ends and a rerun with the same
``--out`` skips what is there.

    nice -n 19 .venv/bin/python bench/science.py --quick --out bench-out/science-quick
    nice -n 19 .venv/bin/python bench/science.py --sets freesolv --partners 3 5 --seeds 0 1 2 3 4 \\
        --recipes default demo fedavgm+r30e1 --out bench-out/science

``--quick``: every set, 3 and 5 partners, seed 0, recipes default (the schema's) and v0-default (the defaults before
2026-12-03); see the timing note in docs/benchmarks.md#federated-vs-pooled-on-public-sets. A recipe ``a+b``
applies ``a``'s overrides then ``b``'s.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from molfed.config import RunConfig, apply_overrides, parse_config
from molfed.data.partition import partition_dataset
from molfed.data.public_sets import PUBLIC_SETS, PublicSet, load_public_set
from molfed.federated import coordinator as coord
from molfed.federated import partner as p
from molfed.federated.baselines import train_alone
from molfed.federated.capabilities import caps
from molfed.federated.inprocess import run_federation
from molfed.federated.strategies import build_strategy
from molfed.preparation import prepare_partner_data, train_settings
from molfed.train.metrics import higher_is_better

REPO = Path(__file__).resolve().parents[1]
KINDS = (coord.FEDERATED, coord.POOLED, coord.LOCAL_ONLY)
SELECTIONS = ("last", "best")


def demo_overrides(path: Path = REPO / "configs" / "demo.yaml") -> tuple[str, ...]:
    """``configs/demo.yaml``'s model, train and federation sections as ``--set`` overrides."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(
        f"{section}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for section in ("model", "train", "federation")
        for key, value in raw.get(section, {}).items()
    )


V0_DEFAULT = (
    "federation.rounds=10",
    "train.epochs=2",
    "train.lr=0.001",
    "federation.strategy=fedavg",
    "train.lr_schedule=constant",
)
"""The schema's defaults before 2026-12-03 (FedAvg, 10 rounds x 2 epochs, Adam at 1e-3, constant)."""
V0_DEMO = (
    "federation.rounds=30",
    "train.epochs=2",
    "train.lr=0.003",
    "federation.strategy=fedavg",
    "train.lr_schedule=constant",
)
"""``configs/demo.yaml``'s settings before 2026-12-03 (FedAvg, 30 rounds x 2 epochs, Adam at 3e-3, constant)."""

RECIPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "v0-default": V0_DEFAULT,
    "v0-demo": V0_DEMO,
    "demo": demo_overrides(),
    "fedavgm": ("federation.strategy=fedavgm",),
    "fedadam": ("federation.strategy=fedadam",),
    "fedprox": ("federation.strategy=fedprox", "federation.strategy_options={proximal_mu: 0.01}"),
    "r20e1": ("federation.rounds=20", "train.epochs=1"),
    "r30e1": ("federation.rounds=30", "train.epochs=1"),
    "r40e1": ("federation.rounds=40", "train.epochs=1"),
    "r30": ("federation.rounds=30",),
    "r60": ("federation.rounds=60",),
    "r100e1": ("federation.rounds=100", "train.epochs=1"),
    "r100": ("federation.rounds=100",),
    "e5": ("train.epochs=5",),
    "slr2": ("federation.strategy=fedavgm", "federation.strategy_options={server_lr: 2.0, momentum: 0.0}"),
    "lr3e-4": ("train.lr=0.0003",),
    "lr3e-3": ("train.lr=0.003",),
    "dropout0.1": ("model.dropout=0.1",),
    "wd1e-4": ("train.weight_decay=0.0001",),
    "cos": ("train.lr_schedule=cosine",),
    "warm3": ("train.warmup_rounds=3",),
}
"""Recipe name -> ``--set`` overrides on a config naming only partners and tasks. Add a line to add a recipe."""

QUICK = {"partners": [3, 5], "seeds": [0], "recipes": ["default", "v0-default"]}


def recipe_overrides(name: str) -> tuple[str, ...]:
    """Overrides of ``name``, or of each ``+``-joined part in turn.

    Raises
    ------
    ValueError
        If a part is not in :data:`RECIPES` (the message lists the choices).
    """
    out: tuple[str, ...] = ()
    for part in name.split("+"):
        if part not in RECIPES:
            raise ValueError(f"unknown recipe {part!r}; choose from {sorted(RECIPES)} (or join them with +)")
        out += RECIPES[part]
    return out


def run_config(
    pset: PublicSet, paths: Mapping[str, Path], root: Path, seed: int, overrides: Sequence[str]
) -> RunConfig:
    """The config a user writes naming only partners and tasks (plus the seed), with ``overrides`` applied."""
    raw: dict[str, Any] = {
        "name": "science",
        "seed": seed,
        "tasks": [{"name": pset.label, "type": pset.task_type}],
        "partners": [{"name": n, "path": str(path), "workspace": str(root / "ws" / n)} for n, path in paths.items()],
    }
    return parse_config(apply_overrides(raw, overrides), source="recipe")


def prepare(config: RunConfig) -> list[p.PartnerData]:
    """Each partner prepared as a run prepares it (:func:`molfed.preparation.prepare_partner_data`: the same splits,
    the calibration hold-out carved from training included)."""
    return [prepare_partner_data(config, c) for c in config.partners if c.path is not None]


Curve = list[dict[str, dict[str, dict[str, float]]]]
"""Per round (index r - 1): ``{partner: {"val": metrics, "test": metrics}}``."""


def federated_curve(config: RunConfig, partners: Sequence[p.PartnerData]) -> tuple[Curve, dict[str, Any]]:
    """Run the recipe's federation; per round, partners' validation (as the engine recorded it) and test metrics
    of that round's global model. Also returns what the baselines need (spec, init, scaling, settings, rounds)."""
    spec = coord.model_spec(
        **config.model.model_dump(),
        task_names=[t.name for t in config.tasks],
        task_types=[t.type for t in config.tasks],
    )
    settings = train_settings(config)
    fed = config.federation
    init = coord.initial_weights(spec, config.seed)
    result = run_federation(
        partners,
        spec=spec,
        init_weights=init,
        strategy=build_strategy(fed.strategy, **fed.strategy_options),
        settings=settings,
        rounds=fed.rounds,
        seed=config.seed,
    )
    stored = result.log.runs[result.run_id].weights
    assert all(np.array_equal(stored[fed.rounds][k], v) for k, v in result.weights.items()), "last round != final"
    curve: Curve = []
    for r in range(1, fed.rounds + 1):
        curve.append(
            {
                d.name: {
                    "val": result.val_history[r - 1][d.name],
                    "test": p.evaluate_partner(
                        d, spec=spec, weights=stored[r], scaling=result.scaling, splits=("test",)
                    )["test"],
                }
                for d in partners
            }
        )
    budget = {"spec": spec, "init_weights": init, "scaling": result.scaling, "settings": settings, "rounds": fed.rounds}
    return curve, budget


def baseline_curves(
    config: RunConfig, partners: Sequence[p.PartnerData], budget: Mapping[str, Any]
) -> dict[str, Curve]:
    """Pooled and local-only with the federation's budget and the flow's seeds; test measured every round too."""
    pooled_sets = {f"{s}:{d.name}": d.splits[s] for d in partners for s in ("val", "test")}
    _, pooled = train_alone(
        [g for d in partners for g in d.splits["train"]],
        **budget,
        seed=p.derive_seed(config.seed, "pooled"),
        val_sets=pooled_sets,
    )
    local = {
        d.name: train_alone(
            d.splits["train"],
            **budget,
            seed=p.derive_seed(config.seed, "local-only", d.name),
            val_sets={"val": d.splits["val"], "test": d.splits["test"]},
        )[1]
        for d in partners
    }
    rounds = budget["rounds"]
    return {
        coord.POOLED: [
            {d.name: {s: pooled[i][f"{s}:{d.name}"] for s in ("val", "test")} for d in partners} for i in range(rounds)
        ],
        coord.LOCAL_ONLY: [{d.name: local[d.name][i] for d in partners} for i in range(rounds)],
    }


def _val_loss(round_metrics: Mapping[str, Mapping[str, Mapping[str, float]]], sizes: Mapping[str, int]) -> float:
    """Size-weighted validation loss over the partners in ``round_metrics``."""
    pairs = [(m["val"]["loss"], sizes[n]) for n, m in round_metrics.items() if "loss" in m["val"]]
    return sum(v * n for v, n in pairs) / max(sum(n for _, n in pairs), 1) if pairs else float("inf")


def _val_score(
    round_metrics: Mapping[str, Mapping[str, Mapping[str, float]]], sizes: Mapping[str, int], metric: str
) -> float:
    """The run's selection value over the partners in ``round_metrics``: ``metric`` combined over their validation
    splits as the engine combines it (RMSE over the union; other metrics size-weighted), NaN if absent."""
    per_partner = {n: m["val"] for n, m in round_metrics.items() if metric in m["val"]}
    return coord.combine_partners(per_partner, sizes).get(metric, float("nan")) if per_partner else float("nan")


def selected_rounds(
    curves: Mapping[str, Curve], names: Sequence[str], val_sizes: Mapping[str, int], metric: str
) -> dict:
    """``{selection: {kind: {partner: round}}}``, ``best`` by the product's rule (``federation.selection:
    best_val``): the first round with the best validation ``metric``, over all partners for the shared models, on
    each partner's own validation split for local-only."""
    sign = -1.0 if higher_is_better(metric) else 1.0

    def best(values: Sequence[float]) -> int:
        keyed = [sign * v if np.isfinite(v) else np.inf for v in values]
        return 1 + int(np.argmin(keyed))

    out: dict[str, dict[str, dict[str, int]]] = {"last": {}, "best": {}}
    for kind, curve in curves.items():
        out["last"][kind] = {n: len(curve) for n in names}
        if kind == coord.LOCAL_ONLY:
            out["best"][kind] = {n: best([_val_score({n: c[n]}, val_sizes, metric) for c in curve]) for n in names}
        else:
            chosen = best([_val_score(c, val_sizes, metric) for c in curve])
            out["best"][kind] = {n: chosen for n in names}
    return out


def result_rows(
    curves: Mapping[str, Curve], metric: str, names: Sequence[str], sizes: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    """Per selection, one row per partner and one for all partners: each kind's test ``metric`` and round."""
    rows = []
    for selection, picks in selected_rounds(curves, names, sizes["val"], metric).items():
        per_kind = {k: {n: curves[k][picks[k][n] - 1][n]["test"] for n in names} for k in curves}
        for n in [*names, coord.ALL_PARTNERS]:
            row: dict[str, Any] = {"selection": selection, "partner": n}
            for kind, tests in per_kind.items():
                if n == coord.ALL_PARTNERS:
                    value = coord.combine_partners(tests, sizes["test"]).get(metric, float("nan"))
                    row[f"{kind}_round"] = picks[kind][names[0]] if kind != coord.LOCAL_ONLY else ""
                else:
                    value = tests[n].get(metric, float("nan"))
                    row[f"{kind}_round"] = picks[kind][n]
                row[kind] = value
            row["n_test"] = sum(sizes["test"].values()) if n == coord.ALL_PARTNERS else sizes["test"][n]
            rows.append(row)
    return rows


def curve_rows(curves: Mapping[str, Curve], metric: str, sizes: Mapping[str, Mapping[str, int]]) -> list[dict]:
    """Per kind and round: all partners' validation loss and ``metric``, and their test ``metric``."""
    rows = []
    for kind, curve in curves.items():
        for r, per_partner in enumerate(curve, 1):
            test = coord.combine_partners({n: m["test"] for n, m in per_partner.items()}, sizes["test"])
            val = _val_loss(per_partner, sizes["val"])
            score = _val_score(per_partner, sizes["val"], metric)
            rows.append(
                {"kind": kind, "round": r, "val_loss": val, "val": score, "test": test.get(metric, float("nan"))}
            )
    return rows


class Sink:
    """Appends rows to ``results.csv`` and ``curves.csv`` as each run ends; knows which runs are already there."""

    KEYS = ("set", "metric", "n_partners", "seed", "recipe", "base")

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.results, self.curves = out / "results.csv", out / "curves.csv"
        self.done: set[tuple[str, ...]] = set()
        if self.results.exists():
            with self.results.open(newline="") as handle:
                self.done = {tuple(row[k] for k in self.KEYS) for row in csv.DictReader(handle)}

    def has(self, key: Mapping[str, Any]) -> bool:
        return tuple(str(key[k]) for k in self.KEYS) in self.done

    @staticmethod
    def _append(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def add(self, key: Mapping[str, Any], results: Sequence[Mapping[str, Any]], curves: Sequence[Mapping]) -> None:
        self._append(self.results, [{**key, **r} for r in results])
        self._append(self.curves, [{**key, **r} for r in curves])
        self.done.add(tuple(str(key[k]) for k in self.KEYS))


def run_cell(
    pset: PublicSet,
    n_partners: int,
    seed: int,
    recipes: Sequence[str],
    sink: Sink,
    root: Path,
    base: Sequence[str] = (),
) -> None:
    """One (set, partner count, seed): partition, then every recipe not yet in ``sink`` (``base`` overrides go
    before each recipe's own)."""
    metric = coord.primary_metric([pset.task_type])
    todo = [
        r
        for r in recipes
        if not sink.has(
            {
                "set": pset.name,
                "metric": metric,
                "n_partners": n_partners,
                "seed": seed,
                "recipe": r,
                "base": " ".join(base),
            }
        )
    ]
    if not todo:
        return
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
    baselines: dict[str, tuple[dict[str, Curve], float]] = {}  # same budget -> same references
    for recipe in todo:
        config = run_config(pset, paths, root, seed, (*base, *recipe_overrides(recipe)))
        partners = prepare(config)
        sizes = {s: {d.name: getattr(d.summary, f"n_{s}") for d in partners} for s in ("val", "test")}
        started = time.perf_counter()
        curve, budget = federated_curve(config, partners)
        fed_s = time.perf_counter() - started
        key = repr((config.model, config.train, config.federation.rounds))
        if key not in baselines:
            started = time.perf_counter()
            baselines[key] = (baseline_curves(config, partners, budget), time.perf_counter() - started)
        refs, ref_s = baselines[key]
        curves = {coord.FEDERATED: curve, **refs}
        cell = {
            "set": pset.name,
            "metric": metric,
            "n_partners": n_partners,
            "seed": seed,
            "recipe": recipe,
            "base": " ".join(base),
            "strategy": config.federation.strategy,
            "rounds": config.federation.rounds,
            "epochs": config.train.epochs,
            "lr": config.train.lr,
        }
        rows = [
            {
                **r,
                "n_train": sum(d.summary.n_train for d in partners)
                if r["partner"] == coord.ALL_PARTNERS
                else next(d.summary.n_train for d in partners if d.name == r["partner"]),
                "fed_s": round(fed_s, 1),
                "ref_s": round(ref_s, 1),
            }
            for r in result_rows(curves, metric, names, sizes)
        ]
        sink.add(cell, rows, curve_rows(curves, metric, sizes))
        kept = next(r for r in rows if r["selection"] == "best" and r["partner"] == coord.ALL_PARTNERS)
        print(  # the models the product keeps (best validated round), as the summary reads them
            f"{pset.name} P={n_partners} seed={seed} {recipe}: fed {kept[coord.FEDERATED]:.3f} pooled "
            f"{kept[coord.POOLED]:.3f} local {kept[coord.LOCAL_ONLY]:.3f} ({fed_s:.0f}+{ref_s:.0f} s)",
            flush=True,
        )


def summarize(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per (set, partners, recipe, selection), over seeds: federated / pooled on all partners, and the share of
    partners whose federated model beats their local-only model."""
    groups: dict[tuple[str, ...], dict[str, dict[str, list[Mapping[str, str]]]]] = {}
    for row in rows:
        key = (row["set"], row["metric"], row["n_partners"], row["recipe"], row["selection"])
        groups.setdefault(key, {}).setdefault(row["seed"], []).append(row)
    out = []
    for (name, metric, n_partners, recipe, selection), seeds in groups.items():
        better = (lambda a, b: a > b) if higher_is_better(metric) else (lambda a, b: a < b)
        ratios, local_ratios, shares = [], [], []
        for seed_rows in seeds.values():
            for row in seed_rows:
                fed, pooled, local = (float(row[k]) for k in KINDS)
                if row["partner"] == coord.ALL_PARTNERS:
                    ratios.append(fed / pooled)
                    local_ratios.append(fed / local)
            pairs = [
                (float(r[coord.FEDERATED]), float(r[coord.LOCAL_ONLY]))
                for r in seed_rows
                if r["partner"] != coord.ALL_PARTNERS
            ]
            pairs = [(f, q) for f, q in pairs if np.isfinite(f) and np.isfinite(q)]
            shares.append(sum(better(f, q) for f, q in pairs) / max(len(pairs), 1))
        ratio = np.asarray(ratios)
        median = float(np.median(ratio))
        ok_ratio = median >= 0.99 if higher_is_better(metric) else median <= 1.05
        caps_ = caps(next(iter(seeds.values()))[0]["strategy"])
        out.append(
            {
                "set": name,
                "metric": metric,
                "partners": int(n_partners),
                "recipe": recipe,
                "selection": selection,
                "seeds": len(ratio),
                "ratio_mean": float(ratio.mean()),
                "ratio_sd": float(ratio.std(ddof=1)) if len(ratio) > 1 else 0.0,
                "ratio_median": median,
                "fed_local_median": float(np.median(local_ratios)),
                "share_beats_local": float(np.mean(shares)),
                "seeds_all_beat_local": sum(s == 1.0 for s in shares),
                "goal": ok_ratio and float(np.median(shares)) == 1.0,
                "every_mode": caps_.secure_sum and caps_.sites,
            }
        )
    return sorted(out, key=lambda s: (s["set"], s["partners"], s["selection"], s["recipe"]))


def format_summary(summary: Sequence[Mapping[str, Any]]) -> str:
    header = (
        f"{'set':<18} {'P':>2} {'recipe':<16} {'sel':<4} {'fed/pooled mean+-sd':>20} {'median':>7} "
        f"{'fed/local':>9} {'beats local':>11} {'all-seeds':>9} {'goal':>4} {'modes':>5}"
    )
    lines = [header, "-" * len(header)]
    for s in summary:
        lines.append(
            f"{s['set']:<18} {s['partners']:>2} {s['recipe']:<16} {s['selection']:<4} "
            f"{s['ratio_mean']:>12.3f} +- {s['ratio_sd']:.3f} {s['ratio_median']:>7.3f} {s['fed_local_median']:>9.3f} "
            f"{s['share_beats_local']:>11.0%} {s['seeds_all_beat_local']:>5}/{s['seeds']:<3} "
            f"{'yes' if s['goal'] else 'no':>4} {'all' if s['every_mode'] else 'some':>5}"
        )
    return "\n".join(lines)


def plot(summary: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One panel per set: federated / pooled per recipe (mean +- sd over seeds), both partner counts and
    selections, with the goal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({s["set"] for s in summary})
    recipes = sorted({s["recipe"] for s in summary}, key=lambda r: (r != "default", r))
    fig, axes = plt.subplots(
        1, len(sets), figsize=(4.2 * len(sets), 0.45 * len(recipes) + 1.8), squeeze=False, sharey=True
    )
    style = {
        (3, "last"): ("o", "C0", 0.0),
        (3, "best"): ("o", "C1", 0.12),
        (5, "last"): ("s", "C2", 0.24),
        (5, "best"): ("s", "C3", 0.36),
    }
    for ax, name in zip(axes[0], sets, strict=True):
        rows = [s for s in summary if s["set"] == name]
        for s in rows:
            marker, color, dy = style.get((s["partners"], s["selection"]), ("^", "C4", 0.48))
            y = recipes.index(s["recipe"]) + dy - 0.18
            ax.errorbar(
                s["ratio_mean"],
                y,
                xerr=s["ratio_sd"],
                fmt=marker,
                color=color,
                markersize=5,
                label=f"{s['partners']} partners, {s['selection']} round",
            )
        auc = higher_is_better(rows[0]["metric"])
        ax.axvline(0.99 if auc else 1.05, color="k", linestyle="--", linewidth=0.8)
        ax.axvline(1.0, color="grey", linewidth=0.5)
        ax.set_title(f"{name} ({rows[0]['metric']})")
        ax.set_xlabel(f"federated / pooled {rows[0]['metric']} (goal {'>= 0.99' if auc else '<= 1.05'})")
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(recipes)), recipes)
    axes[0][0].invert_yaxis()
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=sorted(PUBLIC_SETS), help=f"from {sorted(PUBLIC_SETS)}")
    parser.add_argument("--partners", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="federation.rounds before each recipe's own overrides (recipes naming rounds keep them)",
    )
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help=f"from {list(RECIPES)}, or a+b")
    parser.add_argument("--quick", action="store_true", help=f"reduced run: {QUICK} (overrides those options)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/science"), help="folder for CSVs, summary, plot")
    parser.add_argument("--summary-only", action="store_true", help="summarize and plot --out's results.csv")
    args = parser.parse_args()
    if args.quick:
        args.partners, args.seeds, args.recipes = QUICK["partners"], QUICK["seeds"], QUICK["recipes"]
    try:
        for recipe in args.recipes:
            recipe_overrides(recipe)
        sets = [load_public_set(name) for name in args.sets]
    except ValueError as exc:
        parser.error(str(exc))
    base = () if args.rounds is None else (f"federation.rounds={args.rounds}",)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    sink = Sink(args.out)
    started = time.perf_counter()
    if not args.summary_only:
        for pset in sets:
            for n_partners in args.partners:
                for seed in args.seeds:
                    with tempfile.TemporaryDirectory(prefix="molfed-science-") as tmp:
                        run_cell(pset, n_partners, seed, args.recipes, sink, Path(tmp), base)
    with sink.results.open(newline="") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["set"] in args.sets
            and r["recipe"] in args.recipes
            and int(r["n_partners"]) in args.partners
            and int(r["seed"]) in args.seeds
            and r["base"] == " ".join(base)
        ]
    summary = summarize(rows)
    text = format_summary(summary)
    (args.out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    plot(summary, args.out / "science.png")
    print(text)
    print(
        f"total {time.perf_counter() - started:.0f} s; wrote {args.out}/results.csv, curves.csv, summary.txt, "
        "science.png"
    )


if __name__ == "__main__":
    main()
