"""Orchestration overhead: the demo federation through ``molfed run`` (Prefect + MLflow), through the engine alone,
and through a plain PyTorch loop (the floor), side by side.

Each case is a fresh process (start-up, imports and cold featurization included) on fresh demo partner files and
workspaces, 3 partners, baselines off, ``--epochs`` local epochs (default 1):

- ``flow``: ``molfed run configs/demo.yaml``;
- ``engine``: ``bench/overhead.py --bare``, the product's round loop with its in-process pool and memory run log
  (:func:`molfed.federated.inprocess.run_federation`: evaluation, checkpoints and the strategy's guard included),
  without Prefect or MLflow;
- ``floor``: ``bench/overhead.py --floor``, a plain ~30-line PyTorch FedAvg loop over the same prepared partners and
  the same model: no engine, no evaluation, no checkpoint, no tracking — the reference overhead is measured against.

Each runs the two ``--rounds`` counts (default 10 and 30): the difference gives the marginal cost of a round, and
the short run minus its rounds the start-up. Because that difference of fresh-process totals is noisy, each run also
times its steady-state round (rounds 2..N) inside the process: the loops from a mark each round, the flow from the
MLflow timestamps of each round's commit. Wall and CPU seconds (process + children) are printed: on a shared machine
the CPU figures are the steadier. By default Prefect's and MLflow's databases are created by the timed run (a first
run: Prefect's from ``molfed init``'s migrated template when set-up made one); ``--warm-stores`` times a second run.
Targets (issue 17): flow ≤ 1.5× floor over the long run, start-up ≤ floor's + 5 s, per round ≤ 1.3× floor's.

    python bench/overhead.py [--rounds 10 30] [--epochs 1] [--warm-stores] [--repeat 3]
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


def run_case(kind: str, rounds: int, warm_stores: bool = False, epochs: int = 1) -> tuple[float, float, float]:
    """Time one fresh process: wall and CPU seconds, and the steady-state seconds per round (rounds 2..``rounds``);
    ``warm_stores``: Prefect's and MLflow's databases exist already, as on a user's second run (made by an untimed
    1-round run whose partner workspaces, i.e. featurization caches, are removed)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config = _setup(tmp)
        sets = [f"federation.rounds={rounds}", f"train.epochs={epochs}", *OFF]
        sets.append(f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db")
        if kind == "flow":
            cli = "import sys; from molfed.cli import main; sys.exit(main(sys.argv[1:]))"
            args = [x for s in sets for x in ("--set", s)]
            if warm_stores:
                _timed([sys.executable, "-c", cli, "run", str(config), *args, "--set", "federation.rounds=1"], tmp)
                shutil.rmtree(tmp / "workspaces")
            wall, cpu, _ = _timed([sys.executable, "-c", cli, "run", str(config), *args], tmp)
            return wall, cpu, _flow_round_period(tmp / "mlflow.db", rounds)
        flag = "--floor" if kind == "floor" else "--bare"
        wall, cpu, out = _timed([sys.executable, __file__, flag, str(config), *sets], tmp)
        return wall, cpu, float(out.split("ROUND_PERIOD")[-1])


def _partners(config: Any) -> list[Any]:
    """What a run prepares (``tasks.partner.load_partner`` without Dask), without importing Prefect."""
    from molfed.preparation import prepare_partner_data

    return [prepare_partner_data(config, cfg) for cfg in config.partners]


def _spec(config: Any) -> Any:
    from molfed.federated import coordinator as coord

    m = config.model
    return coord.model_spec(
        encoder=m.encoder,
        hidden_channels=m.hidden_channels,
        num_layers=m.num_layers,
        dropout=m.dropout,
        readout=m.readout,
        head_layers=m.head_layers,
        task_names=[t.name for t in config.tasks],
        task_types=[t.type for t in config.tasks],
    )


def bare(config_path: Path, overrides: list[str]) -> None:
    """The engine case: the flow's engine with the in-process pool and the memory run log, in this process."""
    import torch

    from molfed.config import load_config
    from molfed.federated import coordinator as coord
    from molfed.federated import partner as p
    from molfed.federated.inprocess import run_federation
    from molfed.federated.strategies import build_strategy

    config = load_config(config_path, overrides)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(config.partners)))  # as the flow does
    partners, spec, t = _partners(config), _spec(config), config.train
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


def floor(config_path: Path, overrides: list[str]) -> None:
    """The floor: a plain PyTorch FedAvg loop over the same partners, model and settings; no engine, no evaluation,
    no checkpoints, no tracking. What any federation of this model must spend."""
    import torch
    from torch_geometric.loader import DataLoader

    from molfed.config import load_config
    from molfed.federated import coordinator as coord
    from molfed.federated import partner as p
    from molfed.train.metrics import masked_loss

    config = load_config(config_path, overrides)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(config.partners)))
    partners = _partners(config)
    spec = _spec(config)
    scaling = p.combine_moments([p.partner_label_moments(d) for d in partners], len(spec.task_names))
    weights = coord.initial_weights(spec, config.seed)
    t, marks = config.train, {}
    for server_round in range(1, config.federation.rounds + 1):
        states, sizes = [], []
        for d in partners:
            model = p.materialize(spec, weights, scaling)
            opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
            model.train()
            for _ in range(t.epochs):
                for batch in DataLoader(list(d.splits["train"]), batch_size=t.batch_size, shuffle=True):
                    loss = masked_loss(
                        model.forward_batch(batch), model.scale_targets(batch.y), model.is_classification
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            states.append({k: v.detach().numpy() for k, v in model.state_dict().items() if k in weights})
            sizes.append(len(d.splits["train"]))
        weights = {k: sum(n * s[k] for n, s in zip(sizes, states, strict=True)) / sum(sizes) for k in weights}
        marks[server_round] = time.perf_counter()
    rounds = config.federation.rounds
    print(f"ROUND_PERIOD {(marks[rounds] - marks[2]) / (rounds - 2)}")


KINDS = ("floor", "engine", "flow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs=2, default=[10, 30], metavar=("SHORT", "LONG"))
    parser.add_argument(
        "--epochs", type=int, default=1, help="local epochs per round (default 1, as issue 17 measured)"
    )
    parser.add_argument(
        "--warm-stores",
        action="store_true",
        help="Prefect's and MLflow's databases exist before the timed run (a user's second run); default: fresh",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each case; the least-disturbed (minimum) time is reported"
    )
    parser.add_argument("--bare", nargs="+", metavar=("CONFIG", "KEY=VALUE"), help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs="+", metavar=("CONFIG", "KEY=VALUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(Path(args.bare[0]), args.bare[1:])
        return
    if args.floor:
        floor(Path(args.floor[0]), args.floor[1:])
        return
    r1, r2 = args.rounds
    t: dict[tuple[str, int], float] = {}
    c: dict[tuple[str, int], float] = {}
    period: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.repeat):
        for rounds in (r1, r2):  # interleaved, so that load changes hit all cases alike
            for kind in KINDS:
                wall, cpu, per_round = run_case(kind, rounds, args.warm_stores, args.epochs)
                t[kind, rounds] = min(wall, t.get((kind, rounds), wall))
                c[kind, rounds] = min(cpu, c.get((kind, rounds), cpu))
                period[kind].append(per_round)
                print(
                    f"  {kind:<6} {rounds:>3} rounds: {wall:6.1f} s wall, {cpu:6.1f} s CPU, steady round"
                    f" {per_round:.3f} s (load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    from molfed.startup import template_path

    seeded = " (Prefect's from molfed init's template)" if template_path().is_file() else " (no molfed init template)"
    stores = "existing" if args.warm_stores else "fresh" + seeded
    if args.repeat > 1:
        print(f"\nminimum of {args.repeat} runs per case")
    print(f"\ndemo federation, 3 partners x {r1} and {r2} rounds x {args.epochs} local epoch(s), fresh processes,")
    print(f"start-up included (baselines off), {stores} Prefect and MLflow databases;")
    print("CPU: the process and its children (Prefect's server). floor: a plain PyTorch FedAvg loop, same data/model")
    for unit, d in (("wall", t), ("CPU", c)):
        per = {k: (d[k, r2] - d[k, r1]) / (r2 - r1) for k in KINDS}
        start = {k: d[k, r1] - r1 * per[k] for k in KINDS}
        print(f"\n{unit:<5} {'':<26} {'floor':>8} {'engine':>8} {'flow':>8}  flow/floor  target")
        print(
            f"{unit:<5} {'whole run, ' + str(r2) + ' rounds (s)':<26} {d['floor', r2]:8.1f} {d['engine', r2]:8.1f}"
            f" {d['flow', r2]:8.1f}  {d['flow', r2] / d['floor', r2]:8.2f}x  <= 1.5x"
        )
        print(
            f"{unit:<5} {'start-up (s)':<26} {start['floor']:8.1f} {start['engine']:8.1f} {start['flow']:8.1f}"
            f"  {start['flow'] - start['floor']:+8.1f} s  <= +5 s"
        )
        print(
            f"{unit:<5} {'per round (s)':<26} {per['floor']:8.3f} {per['engine']:8.3f} {per['flow']:8.3f}"
            f"  {per['flow'] / per['floor']:8.2f}x  <= 1.3x"
        )
    med = {k: statistics.median(v) for k, v in period.items()}
    print(
        f"\nsteady-state round (rounds 2..N, median, wall): floor {med['floor']:.3f} s, engine {med['engine']:.3f} s,"
        f" flow {med['flow']:.3f} s ({med['flow'] / med['floor']:.2f}x floor)"
    )


if __name__ == "__main__":
    main()
