"""Poisoning drills, side by side in one run: 5 partners (FreeSolv cut in five), one of them malicious.

For every attack (none, weights x100, sign-flipped delta, NaN) and defense (plain FedAvg, FedAvg behind the delta
screens, FedMedian, trimmed mean, Krum; all with signed updates) it prints the final test RMSE over every partner's
test split, its ratio to the clean FedAvg run, and how many updates were rejected (honest ones in brackets).

    .venv/bin/python bench/poisoning.py [--rounds 6] [--epochs 2] [--hidden 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated.coordinator import model_spec
from molfed.federated.drills import ATTACKS, run_drill
from molfed.federated.inprocess import prepare_demo_libraries
from molfed.federated.integrity import Screens
from molfed.federated.types import QuorumError

SCREENS = Screens(max_norm_ratio=3.0, min_cosine=0.0)
DEFENSES = {
    "fedavg": ("fedavg", None),
    "fedavg + screens": ("fedavg", SCREENS),
    "fedmedian": ("fedmedian", None),
    "fedtrimmedavg": ("fedtrimmedavg", None),
    "krum": ("krum", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="molfed-poisoning-"))
    paths = write_demo_partners(root / "data", seed=0, fractions=(0.2,) * 5, n_bad_rows=0)
    partners = prepare_demo_libraries(paths, root / "ws", seed=0)
    spec = model_spec(
        encoder="gine",
        hidden_channels=args.hidden,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["expt"],
        task_types=["regression"],
    )
    settings = p.TrainSettings(epochs=args.epochs, batch_size=32, lr=args.lr)
    print(
        f"5 partners, malicious: {partners[-1].name}; {args.rounds} rounds x {args.epochs} epochs, hidden {args.hidden}"
    )
    print("| attack | defense | test RMSE | vs clean FedAvg | rejected (honest) |")
    print("|---|---|---|---|---|")
    clean = None
    started = time.perf_counter()
    for attack in ATTACKS:
        for label, (strategy, screens) in DEFENSES.items():
            try:
                result = run_drill(
                    partners,
                    spec=spec,
                    attack=attack,
                    strategy=strategy,
                    screens=screens,
                    settings=settings,
                    rounds=args.rounds,
                )
            except QuorumError as exc:  # e.g. plain FedAvg blown up to inf: every later update is non-finite
                print(f"| {attack} | {label} | diverged | - | round failed: {str(exc)[:60]}... |", flush=True)
                continue
            clean = result.test_rmse if clean is None else clean
            ratio = result.test_rmse / clean
            print(
                f"| {attack} | {label} | {result.test_rmse:.4g} | {ratio:.3g}x | "
                f"{result.rejected} ({result.rejected_honest}) |",
                flush=True,
            )
    print(f"\n{len(ATTACKS) * len(DEFENSES)} federations in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
