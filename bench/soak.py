"""Soak: a long federation keeps its memory flat, and two federations share one MLflow store.

1. ``--partners`` (20) partners x ``--rounds`` (50) rounds on tiny libraries (FreeSolv, ~32 molecules each), in
   this process; prints the resident memory after round 5 and after the last round, and their ratio (target:
   within 10 %).
2. Two federations at once (two ``molfed run`` processes, 3 partners x ``--concurrent-rounds`` rounds) against the
   same SQLite MLflow store; both must finish with every round's metrics exactly once and a checkpoint per round.

Not a test: run ``python bench/soak.py`` (takes minutes). Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from molfed.cli import prefect_environment  # noqa: E402

prefect_environment()


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_libraries(out: Path, n: int) -> dict[str, Path]:
    """FreeSolv (the demo partners' molecules) dealt round-robin into ``n`` tiny CSV libraries."""
    from molfed.data.demo import write_demo_partners

    rows = []
    for path in write_demo_partners(out / "demo", seed=0, n_bad_rows=0).values():
        rows += path.read_text().splitlines()[1:]
    paths = {}
    for i in range(n):
        path = out / f"p{i:02d}.csv"
        path.write_text("smiles,expt\n" + "\n".join(rows[i::n]) + "\n")
        paths[f"p{i:02d}"] = path
    return paths


def config(root: Path, paths: dict[str, Path], rounds: int, name: str, uri: str) -> dict:
    return {
        "name": name,
        "seed": 0,
        "tasks": [{"name": "expt"}],
        "partners": [{"name": n, "path": str(p), "workspace": str(root / "ws" / name / n)} for n, p in paths.items()],
        "model": {"hidden_channels": 16, "num_layers": 2},
        "train": {"epochs": 1, "batch_size": 32},
        "federation": {"rounds": rounds, "strategy": "fedavg"},
        "baselines": {"local_only": False, "pooled": False},
        "tracking": {"tracking_uri": uri, "experiment": "soak", "registered_model": None},
        "champion": {"enabled": False},
    }


class MemoryProbe:
    """A progress listener that records RSS after chosen rounds."""

    def __init__(self, rounds: set[int]):
        self.wanted, self.rss, self.done, self.times = rounds, {}, 0, {}

    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, name: str, detail: str = "") -> None:
        if name == "rounds":
            self.done += 1
            self.times[self.done] = time.perf_counter()
            if self.done in self.wanted:
                self.rss[self.done] = rss_mib()


def soak(root: Path, n_partners: int, rounds: int, uri: str) -> bool:
    from flows.federated_training import federated_training
    from molfed import progress
    from molfed.config import parse_config

    paths = write_libraries(root / "soak-data", n_partners)
    cfg = parse_config(config(root, paths, rounds, "soak", uri))
    probe = MemoryProbe({5, rounds})
    start = time.perf_counter()
    with progress.listening(probe):
        result = federated_training(cfg)
    seconds = time.perf_counter() - start
    early, late = probe.rss[5], probe.rss[rounds]
    ratio = late / early
    per_round = (probe.times[rounds] - probe.times[5]) / (rounds - 5)
    print(f"soak: {n_partners} partners x {rounds} rounds finished in {seconds:.0f} s ({per_round:.2f} s/round)")
    print(f"soak: RSS after round 5 {early:.0f} MiB, after round {rounds} {late:.0f} MiB, ratio {ratio:.3f}")
    print(f"soak: MLflow run {result['run_id']}")
    return ratio <= 1.10


def concurrent(root: Path, rounds: int, uri: str) -> bool:
    import yaml
    from mlflow.tracking import MlflowClient
    from prefect.server.api.server import SubprocessASGIServer

    paths = write_libraries(root / "pair-data", 3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = SubprocessASGIServer()
    if server.running:  # share this process's ephemeral Prefect server
        env["PREFECT_API_URL"] = server.api_url
    procs = {}
    start = time.perf_counter()
    for name in ("pair-a", "pair-b"):
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config(root, paths, rounds, name, uri)))
        log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed when the process ends
        procs[name] = (
            subprocess.Popen(
                [sys.executable, "-m", "molfed.cli", "run", str(path)],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    ok = True
    for name, (proc, log) in procs.items():
        rc = proc.wait()
        log.close()
        if rc != 0:
            print(f"concurrent: {name} exited {rc}: {(root / f'{name}.log').read_text()[-1500:]}")
            ok = False
    print(f"concurrent: two federations of 3 partners x {rounds} rounds in {time.perf_counter() - start:.0f} s")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("soak")
    for name in procs:
        found = client.search_runs([exp.experiment_id], f"attributes.run_name LIKE '{name} %'")  # name + start
        if len(found) != 1:
            print(f"concurrent: {name}: expected one run, found {len(found)}")
            ok = False
            continue
        run = found[0]
        counts = {k: len(client.get_metric_history(run.info.run_id, k)) for k in ("train_loss", "val_rmse")}
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_rmse"))
        intact = (
            run.info.status == "FINISHED"
            and counts == {"train_loss": rounds, "val_rmse": rounds}
            and steps == list(range(1, rounds + 1))
            and run.data.tags.get("molfed.checkpoint.round") == str(rounds)
        )
        print(f"concurrent: {name}: status {run.info.status}, metric counts {counts}, intact {intact}")
        ok = ok and intact
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--concurrent-rounds", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="molfed-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    print(f"soak: working in {root}")
    memory_ok = soak(root, args.partners, args.rounds, uri)
    pair_ok = concurrent(root, args.concurrent_rounds, uri)
    print(f"soak: memory within 10 %: {memory_ok}; two concurrent federations intact: {pair_ok}")
    return 0 if memory_ok and pair_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
