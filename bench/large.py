"""A large partner library: streaming featurization to shards and training from them, vs the small-library path.

Generates ``N`` distinct molecules (FreeSolv + substitution analogs; written to a temporary folder, never
committed), then in one run:

* small library (``--small`` molecules, a prefix of the same file): ``featurize_library`` in memory and
  ``train_local`` for one epoch -- the reference per-molecule rates;
* large library (all ``N``): ``write_shards`` in chunks, then ``train_from_shards`` for one epoch;

and prints peak RSS of this process and of its worker processes (``ru_maxrss``). CPU time per molecule is printed
next to wall time: on a shared machine wall time also counts other users' load.

    python bench/large.py 20000                      # a quick check
    python bench/large.py 1000000 --workers 2        # target 3 (tens of minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from molecules import write_library  # noqa: E402

from molfed.chem.standardize import StandardizeOptions  # noqa: E402
from molfed.data.cache import featurize_library  # noqa: E402
from molfed.data.shards import write_shards  # noqa: E402
from molfed.federated import coordinator as coord  # noqa: E402
from molfed.models.model import build_model  # noqa: E402
from molfed.train.local import train_local  # noqa: E402
from molfed.train.shards import train_from_shards  # noqa: E402

OPTS = dict(smiles_column="smiles", label_columns=["y"], task_types=["regression"])


def _model():  # noqa: ANN202
    spec = coord.model_spec(
        encoder="gine",
        hidden_channels=64,
        num_layers=3,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["y"],
        task_types=["regression"],
    )
    model = build_model(spec, seed=0)
    model.set_target_scaling([0.0], [1.0])
    return model


def _clock() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), sum(u.ru_utime + u.ru_stime for u in usage)


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = _clock()
    return now[0] - start[0], now[1] - start[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="molecules in the large library")
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the generated library in")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as name:
        tmp = args.keep or Path(name)
        tmp.mkdir(parents=True, exist_ok=True)
        big = tmp / f"library-{args.n}.csv"
        if not big.exists():
            start = time.perf_counter()
            write_library(big, args.n)
            print(f"generated {args.n} molecules in {time.perf_counter() - start:.0f} s", flush=True)
        small = tmp / "small.csv"
        with big.open() as src, small.open("w") as dst:
            dst.writelines(line for _, line in zip(range(args.small + 1), src, strict=False))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

        t = _clock()
        lib = featurize_library(
            small, tmp / "ws", standardize=StandardizeOptions(), duplicates="merge", workers=args.workers, **OPTS
        )
        small_feat = _since(t)
        t = _clock()
        train_local(_model(), lib.graphs, epochs=1, batch_size=32)
        small_train = _since(t)
        n_small = len(lib.graphs)
        del lib

        t = _clock()
        shards = write_shards(big, tmp / "shards", chunk_size=args.chunk, workers=args.workers, **OPTS)
        big_feat = _since(t)
        t = _clock()
        train_from_shards(_model(), shards.paths, epochs=1, batch_size=32)
        big_train = _since(t)
        n_big = shards.n_molecules
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20

    def rates(name: str, n: int, wall_cpu: tuple[float, float]) -> tuple[float, float]:
        wall, cpu = wall_cpu
        print(f"   {name:<43} {n / wall:>10.0f} mol/s wall  {n / cpu:>8.0f} mol/CPU-s  ({wall:.0f} s)")
        return n / wall, n / cpu

    print(f"\nlarge library: {n_big} molecules in {len(shards.paths)} shards; small: {n_small}; torch 1 thread")
    sf, sf_cpu = rates("small: featurize_library (in memory)", n_small, small_feat)
    bf, bf_cpu = rates(f"large: write_shards (workers={args.workers})", n_big, big_feat)
    st, st_cpu = rates("small: train_local, 1 epoch", n_small, small_train)
    bt, bt_cpu = rates("large: train_from_shards, 1 epoch", n_big, big_train)
    print(f"{'target':<46} {'figure':>16}  {'reference':<22} ratio")
    print(f"{'3. peak RSS, main process':<46} {rss:>13.2f} GB  {'3 GB':<22} (before: {rss_before:.2f} GB)")
    print(f"{'3. peak RSS, largest worker':<46} {rss_children:>13.2f} GB  {'3 GB':<22}")
    print(
        f"{'3. featurization rate, large / small':<46} {bf_cpu:>10.0f} mol/CPU-s  "
        f"{'small ' + format(sf_cpu, '.0f'):<22}"
        f" {bf_cpu / sf_cpu:.2f}x CPU, {bf / sf:.2f}x wall (target >= 0.8x)"
    )
    print(
        f"{'3. training rate, large / small':<46} {bt_cpu:>10.0f} mol/CPU-s  {'small ' + format(st_cpu, '.0f'):<22}"
        f" {bt_cpu / st_cpu:.2f}x CPU, {bt / st:.2f}x wall (target >= 0.8x)"
    )


if __name__ == "__main__":
    main()
