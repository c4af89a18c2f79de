"""Cost of secure aggregation next to plain FedAvg, side by side in one run, on the same random updates.

Per round with K partners and P parameters: key set-up (advertise + encrypted Shamir shares), masking (all partners
together; each one's share is this / K), unmasking at the coordinator, and plain ``aggregate.fedavg`` on the same
updates; with no dropout and with one partner dropping after sharing keys (its pairwise masks are recovered).

    .venv/bin/python bench/secagg.py [--partners 5] [--params 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from molfed.federated.aggregate import fedavg
from molfed.federated.secure import SecAggPartner, default_threshold, secure_fedavg


def _best(fn, rounds: int = 5) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _one_round(updates, dropped, timings):
    names = sorted(updates)
    threshold = default_threshold(len(names))
    start = time.perf_counter()
    partners = {n: SecAggPartner(n, run_id="bench", server_round=1, threshold=threshold) for n in names}
    roster = {n: p.advertise() for n, p in partners.items()}
    sent = [s for p in partners.values() for s in p.share_keys(roster)]
    inbox = {n: [s for s in sent if s.recipient == n] for n in names}
    mid = time.perf_counter()
    masked = [partners[n].mask(*updates[n], inbox[n]) for n in names if n not in dropped]
    end = time.perf_counter()
    reveals = [partners[m.partner].reveal([m.partner for m in masked]) for m in masked]
    template = updates[names[0]][0]
    out = secure_fedavg(masked, reveals, roster, template=template, run_id="bench", server_round=1, threshold=threshold)
    timings.append((mid - start, end - mid, time.perf_counter() - end))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=5)
    parser.add_argument("--params", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    updates = {
        f"p{i}": ({"w": rng.normal(size=args.params).astype(np.float32)}, int(rng.integers(50, 500)))
        for i in range(args.partners)
    }
    plain, reference = _best(lambda: fedavg(list(updates.values())))
    print(f"{args.partners} partners x {args.params} parameters; best of 5; 1 process")
    print(f"plain fedavg                         {plain * 1e3:8.1f} ms")
    for dropped in ((), ("p1",)):
        timings: list[tuple[float, float, float]] = []
        _, out = _best(lambda d=dropped, t=timings: _one_round(updates, d, t))
        setup, masking, unmask = min(timings, key=sum)
        label = "no dropout" if not dropped else "1 dropped after sharing keys"
        print(
            f"secure, {label:29s}key set-up {setup * 1e3:6.1f} ms  mask (all) {masking * 1e3:6.1f} ms  "
            f"unmask {unmask * 1e3:6.1f} ms  total {sum((setup, masking, unmask)) / plain:5.1f}x plain"
        )
        if not dropped:
            error = float(np.abs(out["w"] - reference["w"]).max())
            print(f"  max |secure - plain| = {error:.2e}")


if __name__ == "__main__":
    main()
