"""Orchestration overhead: the demo federation through Prefect + MLflow vs a bare in-process loop, side by side.

Each case is a fresh process (start-up, imports and cold featurization included) on fresh demo partner files and
workspaces: ``molfed run configs/demo.yaml`` (3 partners; baselines off, since the bare loop has none) and
``bench/overhead.py --bare``, which calls the same molfed functions (partner preparation, model spec, initial
weights, strategy, and the product's round loop with its in-process pool and memory run log:
:func:`molfed.federated.inprocess.run_federation`) without Prefect or MLflow. Both run ``--rounds`` and twice
that, which gives the marginal cost of a round. Because that difference of two fresh-process totals is noisy (a
few seconds of start-up noise over 10 rounds), each run also times its steady-state round, rounds 2..N, inside the
process: the bare loop from the moment each round's updates are done, the flow from the MLflow timestamps of each
round's commit. Wall and CPU seconds (process + children) are printed: on a shared machine the CPU ratio is the
steadier figure. By default Prefect's and MLflow's databases are created by the timed run (a first run: Prefect's
from ``molfed init``'s migrated template when set-up made one, as for any new ``PREFECT_HOME``); ``--warm-stores``
times a second run.

    python bench/overhead.py [--rounds 10] [--warm-stores] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OFF = ["baselines.local_only=false", "baselines.pooled=false"]


def _setup(tmp: Path) -> Path:
    from molfed.data.demo import write_demo_partners

    write_demo_partners(tmp / "demo_data", seed=0)
    (tmp / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "demo.yaml", tmp / "configs" / "demo.yaml")
    return tmp / "configs" / "demo.yaml"


def _timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (the process and its children, e.g. Prefect's server) and stdout of one command."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(cwd / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed, cpu, done.stdout


def _flow_round_period(db: Path, rounds: int) -> float:
    """Seconds between the commits of rounds 2 and ``rounds`` of the run that has ``rounds`` rounds, per round
    (from the timestamps of its ``train_loss`` metric, logged when a round is committed)."""
    with sqlite3.connect(db) as con:
        (run,) = con.execute("SELECT run_uuid FROM metrics WHERE key = 'train_loss' AND step = ?", (rounds,)).fetchone()
        stamps = dict(
            con.execute("SELECT step, timestamp FROM metrics WHERE key = 'train_loss' AND run_uuid = ?", (run,))
        )
    return (stamps[rounds] - stamps[2]) / 1000 / (rounds - 2)


def run_case(kind: str, rounds: int, warm_stores: bool = False) -> tuple[float, float, float]:
    """Time one fresh process: wall and CPU seconds, and the steady-state seconds per round (rounds 2..``rounds``);
    ``warm_stores``: Prefect's and MLflow's databases exist already, as on a user's second run (made by an untimed
    1-round run whose partner workspaces, i.e. featurization caches, are removed)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config = _setup(tmp)
        sets = [f"federation.rounds={rounds}", *OFF, f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db"]
        if kind == "flow":
            cli = "import sys; from molfed.cli import main; sys.exit(main(sys.argv[1:]))"
            args = [x for s in sets for x in ("--set", s)]
            if warm_stores:
                _timed([sys.executable, "-c", cli, "run", str(config), *args, "--set", "federation.rounds=1"], tmp)
                shutil.rmtree(tmp / "workspaces")
            wall, cpu, _ = _timed([sys.executable, "-c", cli, "run", str(config), *args], tmp)
            return wall, cpu, _flow_round_period(tmp / "mlflow.db", rounds)
        wall, cpu, out = _timed([sys.executable, __file__, "--bare", str(config), *sets], tmp)
        return wall, cpu, float(out.split("ROUND_PERIOD")[-1])


def bare(config_path: Path, overrides: list[str]) -> None:
    """The bare loop: the flow's engine with the in-process pool and the memory run log, in this process."""
    import torch

    from molfed.chem.standardize import StandardizeOptions
    from molfed.config import load_config
    from molfed.federated import coordinator as coord
    from molfed.federated import partner as p
    from molfed.federated.inprocess import run_federation
    from molfed.federated.strategies import build_strategy

    config = load_config(config_path, overrides)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(config.partners)))  # as the flow does
    partners = [  # what tasks.partner.load_partner does, without importing Prefect
        p.prepare_partner(
            cfg.name,
            path=cfg.path,
            workspace=config.workspace_for(cfg),
            smiles_column=cfg.smiles_column,
            label_columns=[cfg.column_for(t.name) for t in config.tasks],
            task_types=[t.type for t in config.tasks],
            standardize=StandardizeOptions(**config.data.standardize.model_dump()),
            duplicates=config.data.duplicates,
            split_fractions=config.data.split_fractions,
            seed=config.seed,
        )
        for cfg in config.partners
    ]
    t = config.train
    m = config.model
    spec = coord.model_spec(
        encoder=m.encoder,
        hidden_channels=m.hidden_channels,
        num_layers=m.num_layers,
        dropout=m.dropout,
        readout=m.readout,
        head_layers=m.head_layers,
        task_names=[t.name for t in config.tasks],
        task_types=[t.type for t in config.tasks],
    )
    marks: dict[int, float] = {}

    def mark(update: Any, server_round: int, weights: Any) -> Any:  # called as a round's updates are done
        marks.setdefault(server_round, time.perf_counter())
        return update

    run_federation(
        partners,
        spec=spec,
        init_weights=coord.initial_weights(spec, config.seed),
        strategy=build_strategy(config.federation.strategy, **config.federation.strategy_options),
        settings=p.TrainSettings(t.epochs, t.batch_size, t.optimizer, t.lr, t.weight_decay),
        rounds=config.federation.rounds,
        seed=config.seed,
        seal=mark,
    )
    rounds = config.federation.rounds
    print(f"ROUND_PERIOD {(marks[rounds] - marks[2]) / (rounds - 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--warm-stores",
        action="store_true",
        help="Prefect's and MLflow's databases exist before the timed run (a user's second run); default: fresh",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each case; the least-disturbed (minimum) time is reported"
    )
    parser.add_argument("--bare", nargs="+", metavar=("CONFIG", "KEY=VALUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(Path(args.bare[0]), args.bare[1:])
        return
    r1, r2 = args.rounds, 2 * args.rounds
    t: dict[tuple[str, int], float] = {}
    c: dict[tuple[str, int], float] = {}
    period: dict[str, list[float]] = {"bare": [], "flow": []}
    for _ in range(args.repeat):
        for rounds in (r1, r2):  # interleaved, so that load changes hit all cases alike
            for kind in ("bare", "flow"):
                wall, cpu, per_round = run_case(kind, rounds, args.warm_stores)
                t[kind, rounds] = min(wall, t.get((kind, rounds), wall))
                c[kind, rounds] = min(cpu, c.get((kind, rounds), cpu))
                period[kind].append(per_round)
                print(
                    f"  {kind:<5} {rounds:>3} rounds: {wall:6.1f} s wall, {cpu:6.1f} s CPU, steady round"
                    f" {per_round:.3f} s (load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    from molfed.startup import template_path

    seeded = " (Prefect's from molfed init's template)" if template_path().is_file() else " (no molfed init template)"
    stores = "existing" if args.warm_stores else "fresh" + seeded
    if args.repeat > 1:
        print(f"\nminimum of {args.repeat} runs per case")
    print(f"\ndemo federation, 3 partners x {r1} rounds, fresh processes, start-up included (baselines off),")
    print(f"{stores} Prefect and MLflow databases; CPU: the process and its children (Prefect's server)")
    print(f"{'target':<46} {'figure':>16}  {'reference':<22} ratio")
    for unit, d in (("wall", t), ("CPU", c)):
        ratio = d["flow", r1] / d["bare", r1]
        per_round = {k: (d[k, r2] - d[k, r1]) / (r2 - r1) for k in ("bare", "flow")}
        extra = per_round["flow"] - per_round["bare"]
        print(
            f"{'4. molfed run (Prefect + MLflow), ' + unit:<46} {d['flow', r1]:>14.1f} s  "
            f"{'bare loop ' + format(d['bare', r1], '.1f') + ' s':<22}"
            f" {ratio:.2f}x (target <= 2.5x)"
        )
        print(
            f"{'4. marginal cost of a round, ' + unit:<46} {per_round['flow']:>14.2f} s  "
            f"{'bare ' + format(per_round['bare'], '.2f') + ' s/round':<22} {extra:+.2f} s (target <= 0.3 s)"
        )
    flow, bare_round = statistics.median(period["flow"]), statistics.median(period["bare"])
    print(
        f"{'4. steady-state round (rounds 2..N, median), wall':<46} {flow:>14.2f} s  "
        f"{'bare ' + format(bare_round, '.2f') + ' s/round':<22} {flow - bare_round:+.2f} s (target <= 0.3 s)"
    )


if __name__ == "__main__":
    main()
