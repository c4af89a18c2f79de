"""Utility vs privacy on the demo partners, a membership-inference check, and the cost of per-graph gradients.

Rows: no DP (eps = inf), sample-level DP-SGD at eps in {1, 3, 8} (per partner, delta 1e-5; the noise multiplier is
calibrated so the *largest* partner epsilon after all rounds equals the target: the smallest partner is sampled most
often), client-level DP at the same eps (clip bound ``--client-bound``, noise at aggregation), and the pooled
baseline (all training molecules in one place, no DP). Each row: test RMSE per partner and over all partners
(``sqrt(sum n_k rmse_k^2 / sum n_k)``), and the loss-threshold membership-inference ROC-AUC of the final model:
members = all partners' training molecules, non-members = their test molecules (0.5 = nothing learnable).

Budget (smaller than the demo's 30 rounds x 2 epochs x GINE 64 x 3, to keep DP-SGD's cost reasonable here):
``--rounds`` rounds (default 20) x 1 local epoch, batch 32 (Poisson rate 32/n at DP rows), Adam lr 3e-3, GINE
32 x 2, clip 1.0, seed 0, one torch thread, the product's engine in process
(``molfed.federated.inprocess.run_federation``).

A last row gives the test RMSE of predicting the training mean (what a model that learnt nothing scores).
Also printed: one epoch of partner alpha with DP-SGD vs plain training, and one batch of 32 graphs with the
vectorized per-graph gradients vs a loop of single-graph backward passes vs one plain backward pass.

The default run took 824 s on the shared 2-core machine (load average ~10-14, 2026-11-29); DP-SGD rows cost
~150-220 s each (20 rounds), noise calibration included.

    .venv/bin/python bench/privacy.py [--rounds 20] [--epsilons 1,3,8,inf] [--no-client] [--batch-size 32] [--lr 3e-3]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

from molfed.data.demo import write_demo_partners
from molfed.federated import partner as p
from molfed.federated.coordinator import combine_partners, initial_weights, model_spec
from molfed.federated.dp_budget import round_costs, spend_round, wrap_strategy
from molfed.federated.inprocess import prepare_demo_libraries, run_federation
from molfed.federated.strategies import build_strategy
from molfed.privacy.accountant import PrivacyLedger
from molfed.privacy.dpsgd import DPSGDSettings, per_graph_losses, per_sample_gradients
from molfed.privacy.membership import loss_threshold_auc, sample_losses
from molfed.train.local import train_local

SEED, DELTA, CLIP = 0, 1e-5, 1.0
SETTINGS = p.TrainSettings(epochs=1, batch_size=32, optimizer="adam", lr=3e-3)
SPEC = model_spec(
    encoder="gine",
    hidden_channels=32,
    num_layers=2,
    dropout=0.0,
    readout="mean",
    head_layers=2,
    task_names=["expt"],
    task_types=["regression"],
)


def load_partners(root: Path) -> list[p.PartnerData]:
    paths = write_demo_partners(root / "data", seed=SEED)
    return prepare_demo_libraries(paths, root / "ws", seed=SEED)


def final_epsilon(mode: str, sigma: float, n_train: dict[str, int], rounds: int) -> float:
    costs = round_costs(mode, noise_multiplier=sigma, n_train=n_train, batch_size=SETTINGS.batch_size, epochs=1)
    ledger = PrivacyLedger(DELTA)
    for _ in range(rounds):
        metrics = spend_round(ledger, costs)
    return metrics.get("dp_epsilon", metrics.get("dp_client_epsilon", 0.0))


def calibrate(mode: str, target: float, n_train: dict[str, int], rounds: int) -> float:
    """Smallest noise multiplier (to 0.5 %) whose final epsilon is <= target, by bisection."""
    lo, hi = 0.3, 2000.0
    while hi / lo > 1.005:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if final_epsilon(mode, mid, n_train, rounds) <= target else (mid, hi)
    return hi


def evaluate_row(partners: Sequence[p.PartnerData], weights, scaling) -> tuple[dict[str, float], float]:
    model = p.materialize(SPEC, weights, scaling)
    test = {
        d.name: p.evaluate_partner(d, spec=SPEC, weights=weights, scaling=scaling, splits=("test",))["test"]
        for d in partners
    }
    sizes = {d.name: len(d.splits["test"]) for d in partners}
    rmse = {n: m["rmse"] for n, m in test.items()}
    rmse["all"] = combine_partners({n: {"rmse": m["rmse"]} for n, m in test.items()}, sizes)["rmse"]
    members = np.concatenate([sample_losses(model, d.splits["train"]) for d in partners])
    others = np.concatenate([sample_losses(model, d.splits["test"]) for d in partners])
    return rmse, loss_threshold_auc(members, others)


def mean_predictor(partners: Sequence[p.PartnerData], scaling) -> dict[str, float]:
    """Test RMSE of predicting the federation-wide training mean for every molecule: what "learnt nothing" scores."""
    errors = {d.name: np.array([float(g.y[0, 0]) for g in d.splits["test"]]) - scaling["mean"][0] for d in partners}
    out = {n: float(np.sqrt(np.mean(e**2))) for n, e in errors.items()}
    out["all"] = float(np.sqrt(np.mean(np.concatenate(list(errors.values())) ** 2)))
    return out


def run_federated(partners, mode: str, sigma: float, rounds: int, client_bound: float):
    strategy = wrap_strategy(
        build_strategy("fedavg"),
        mode=mode,
        noise_multiplier=sigma,
        max_grad_norm=client_bound if mode == "client" else CLIP,
        noise_seed=SEED,
    )
    init = initial_weights(SPEC, SEED)
    result = run_federation(
        partners, spec=SPEC, init_weights=init, strategy=strategy, settings=SETTINGS, rounds=rounds, seed=SEED
    )
    return result.weights, result.scaling


def cost_lines(data: p.PartnerData, scaling) -> list[str]:
    init = initial_weights(SPEC, SEED)
    times = {}
    for label, dp in (("plain", None), ("dp-sgd", DPSGDSettings(1.0, CLIP, SEED))):
        model = p.materialize(SPEC, init, scaling)
        start = time.perf_counter()
        train_local(model, data.splits["train"], epochs=1, batch_size=32, lr=3e-3, seed=SEED, dp=dp)
        times[label] = time.perf_counter() - start
    model = p.materialize(SPEC, init, scaling)
    graphs = list(data.splits["train"][:32])
    batch = Batch.from_data_list(graphs)

    def plain() -> None:
        model.zero_grad()
        per_graph_losses(
            model.forward_batch(batch), model.scale_targets(batch.y), model.is_classification
        ).mean().backward()

    def loop() -> None:
        for g in graphs:
            one = Batch.from_data_list([g])
            model.zero_grad()
            per_graph_losses(
                model.forward_batch(one), model.scale_targets(one.y), model.is_classification
            ).sum().backward()

    step = {}
    for label, fn in (("plain", plain), ("vectorized", lambda: per_sample_gradients(model, batch)), ("loop", loop)):
        fn()
        start = time.perf_counter()
        for _ in range(5):
            fn()
        step[label] = (time.perf_counter() - start) / 5
    return [
        f"one epoch of {data.name} ({len(data.splits['train'])} molecules): plain {times['plain']:.2f} s, "
        f"DP-SGD {times['dp-sgd']:.2f} s (x{times['dp-sgd'] / times['plain']:.1f})",
        f"one batch of 32 graphs: plain backward {step['plain'] * 1e3:.0f} ms, vectorized per-graph gradients "
        f"{step['vectorized'] * 1e3:.0f} ms (x{step['vectorized'] / step['plain']:.1f}), single-graph loop "
        f"{step['loop'] * 1e3:.0f} ms (x{step['loop'] / step['plain']:.1f})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epsilons", default="1,3,8,inf")
    parser.add_argument("--client-bound", type=float, default=0.5, help="client-level clip bound S")
    parser.add_argument("--no-client", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    global SETTINGS
    SETTINGS = p.TrainSettings(epochs=1, batch_size=args.batch_size, optimizer="adam", lr=args.lr)
    torch.set_num_threads(1)
    started = time.perf_counter()
    partners = load_partners(Path(tempfile.mkdtemp(prefix="molfed-bench-privacy-")))
    n_train = {d.name: len(d.splits["train"]) for d in partners}
    names = [d.name for d in partners]
    scaling = p.combine_moments([p.partner_label_moments(d) for d in partners], 1)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    settings = [("sample", e) for e in epsilons] + (
        [("client", e) for e in epsilons if e != math.inf] if not args.no_client else []
    )
    rows = []
    for mode, eps in settings:
        start = time.perf_counter()
        if eps == math.inf:
            weights, _ = run_federated(partners, "off", 0.0, args.rounds, args.client_bound)
            sigma, label, spent = 0.0, "federated, no DP", math.inf
        else:
            sigma = calibrate(mode, eps, n_train, args.rounds)
            weights, _ = run_federated(partners, mode, sigma, args.rounds, args.client_bound)
            label, spent = f"federated, {mode}-level DP", final_epsilon(mode, sigma, n_train, args.rounds)
        rmse, auc = evaluate_row(partners, weights, scaling)
        rows.append((label, eps, spent, sigma, rmse, auc, time.perf_counter() - start))
    start = time.perf_counter()
    pooled, _ = p.train_alone(
        [g for d in partners for g in d.splits["train"]],
        spec=SPEC,
        init_weights=initial_weights(SPEC, SEED),
        scaling=scaling,
        settings=SETTINGS,
        rounds=args.rounds,
        seed=p.derive_seed(SEED, "pooled"),
    )
    rmse, auc = evaluate_row(partners, pooled, scaling)
    rows.append(("pooled, no DP", math.inf, math.inf, 0.0, rmse, auc, time.perf_counter() - start))
    rows.append(
        ("mean predictor (reference)", math.nan, math.nan, math.nan, mean_predictor(partners, scaling), math.nan, 0)
    )

    print(
        f"\n{args.rounds} rounds x 1 epoch, GINE 32x2, batch {SETTINGS.batch_size}, lr {SETTINGS.lr:g}, "
        f"delta {DELTA:g}; train sizes {n_train}"
    )
    head = "| setting | target eps | eps spent | sigma | " + " | ".join(f"RMSE {n}" for n in names)
    print(head + " | RMSE all | MIA AUC | s |")
    print("|" + "---|" * (len(names) + 7))
    for label, eps, spent, sigma, rmse, auc, secs in rows:
        cells = " | ".join(f"{rmse[n]:.3f}" for n in names)
        print(
            f"| {label} | {eps:g} | {spent:.2f} | {sigma:.3g} | {cells} | {rmse['all']:.3f} | {auc:.3f} | {secs:.0f} |"
        )
    print()
    for line in cost_lines(partners[0], scaling):
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
