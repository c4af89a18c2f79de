"""Partners scale: round time vs number of partners, with and without sharing the cores between partner tasks.

One process, one Prefect server: federations of 5, 10 and 20 partners (``--partners``) x ``--rounds`` (5) rounds,
every partner a tiny library of the same size (FreeSolv dealt round-robin into 20 CSVs, ~32 molecules each; the
5- and 10-partner runs use the first libraries), a GINE 16 x 2, 1 epoch. For each size, two runs side by side:

- ``shared``: molfed's setting: before each fan-out, torch gets ``max(1, cores // concurrent partner tasks)``
  threads (:func:`tasks.partner.threads_per_partner`);
- ``torch default``: torch's own default (one thread per core, in every concurrently training partner task).

Printed: the mean round time (rounds 2..R; round 1 includes model warm-up), its CPU time (this process: partner
tasks, aggregation, MLflow; not Prefect's server), the time per partner-round, and least-squares slopes of round
time vs partners (constant time per partner-round = linear). On a shared machine the CPU figures are the steadier.

    python bench/scaling.py [--partners 5 10 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from soak import config, write_libraries  # bench/soak.py: same tiny libraries and config (prefect env set there)

TORCH_DEFAULT_THREADS = torch.get_num_threads()


class RoundClock:
    """A progress listener that records wall and CPU time at the end of every round."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def stage(self, name: str, total: int) -> None:
        if name == "rounds":
            self._mark()

    def advance(self, name: str, detail: str = "") -> None:
        if name == "rounds":
            self._mark()

    def _mark(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def per_round(self, skip: int = 1) -> tuple[float, float]:
        """Mean wall and CPU seconds per round, leaving out the first ``skip`` rounds."""
        n = len(self.wall) - 1 - skip
        return (self.wall[-1] - self.wall[skip]) / n, (self.cpu[-1] - self.cpu[skip]) / n


def run(root: Path, paths: dict[str, Path], rounds: int, share: bool, uri: str) -> tuple[float, float]:
    from flows.federated_training import federated_training
    from molfed import progress
    from molfed.config import parse_config
    from tasks.partner import LocalPartners

    name = f"scale-{len(paths)}-{'shared' if share else 'default'}"
    raw = config(root, paths, rounds, name, uri)
    for p in raw["partners"]:  # one workspace per partner for all runs: featurization is cached after the first
        p["workspace"] = str(root / "ws" / p["name"])
    raw["tracking"]["experiment"] = "scaling"
    clock = RoundClock()
    LocalPartners.share_cores = share
    if not share:  # undo the previous run's setting: torch's default is one thread per core
        torch.set_num_threads(TORCH_DEFAULT_THREADS)
    with progress.listening(clock):
        federated_training(parse_config(raw))
    return clock.per_round()


def slope(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of ``ys`` against ``xs``."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    s = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return s, my - s * mx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="molfed-scaling-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    libraries = write_libraries(root / "data", max(args.partners))
    cores = len(os.sched_getaffinity(0))
    results: dict[tuple[int, bool], tuple[float, float]] = {}
    for n in args.partners:
        paths = dict(list(libraries.items())[:n])
        for share in (True, False):  # side by side, so that load changes hit both alike
            results[n, share] = run(root, paths, args.rounds, share, uri)
            wall, cpu = results[n, share]
            print(
                f"  {n:>3} partners, {'shared' if share else 'torch default'}: {wall:.2f} s/round, "
                f"{cpu:.2f} CPU-s/round (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    print(f"\npartners scale: {args.rounds} rounds, tiny libraries, {cores} cores, mean of rounds 2..{args.rounds}")
    print("partners | round, shared: wall  CPU  wall/partner | round, torch default: wall  CPU | default/shared wall")
    for n in args.partners:
        (sw, sc), (dw, dc) = results[n, True], results[n, False]
        print(f"{n:>8} | {sw:>17.2f} s {sc:>5.2f} s {sw / n:>9.3f} s | {dw:>25.2f} s {dc:>5.2f} s | {dw / sw:>6.2f}x")
    for share in (True, False):
        label = "shared" if share else "torch default"
        for i, unit in ((0, "wall"), (1, "CPU")):
            s, c = slope(args.partners, [results[n, share][i] for n in args.partners])
            print(f"slope ({label}, {unit}): {s:.3f} s per partner-round (intercept {c:.2f} s/round)")
    first, last = args.partners[0], args.partners[-1]
    for i, unit in ((0, "wall"), (1, "CPU")):
        growth = (results[last, True][i] / last) / (results[first, True][i] / first)
        print(f"{unit} per partner-round, {last} vs {first} partners (shared): {growth:.2f}x (1.0 = linear)")


if __name__ == "__main__":
    main()
