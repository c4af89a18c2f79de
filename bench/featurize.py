"""Featurization throughput, side by side in one run, on the same molecules (FreeSolv, repeated).

Prints molecules/s for bare RDKit parsing (the floor of any RDKit featurizer), molfed's parse + featurize,
molfed's full library path (parse, standardize, InChIKey, featurize) and PyG's ``from_smiles``, with ratios; then
the cold vs warm (cache hit) time of a partner library. Single process, one torch thread.

    .venv/bin/python bench/featurize.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import datamol as dm
import torch
from rdkit import Chem, rdBase

from molfed.chem.featurize import mol_to_graph
from molfed.chem.standardize import StandardizeOptions, parse_smiles
from molfed.data.cache import featurize_library


def _rate(fn, items, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="copies of FreeSolv's 642 SMILES")
    args = parser.parse_args()
    torch.set_num_threads(1)
    smiles = list(dm.data.freesolv()["smiles"]) * args.repeat

    def bare(items):
        for s in items:
            Chem.MolFromSmiles(s)

    def molfed_graph(items):
        for s in items:
            mol, _ = parse_smiles(s)
            mol_to_graph(mol, [0.0])

    def pyg(items):
        from torch_geometric.utils import from_smiles

        for s in items:
            from_smiles(s)

    with rdBase.BlockLogs():
        r_bare = _rate(bare, smiles)
        r_molfed = _rate(molfed_graph, smiles)
        r_pyg = _rate(pyg, smiles)
    print(f"molecules: {len(smiles)} (FreeSolv x {args.repeat}); best of 3; 1 process, 1 torch thread")
    print(f"{'bare Chem.MolFromSmiles':<42} {r_bare:>9.0f} mol/s  1.00x")
    print(
        f"{'molfed parse_smiles + mol_to_graph':<42} {r_molfed:>9.0f} mol/s  {r_molfed / r_bare:.2f}x bare"
        f"  {r_molfed / r_pyg:.2f}x PyG"
    )
    print(f"{'PyG from_smiles':<42} {r_pyg:>9.0f} mol/s  {r_pyg / r_bare:.2f}x bare")

    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib.csv"
        lib.write_text("smiles,y\n" + "".join(f"{s},{i % 7}\n" for i, s in enumerate(dm.data.freesolv()["smiles"])))
        opts = dict(
            smiles_column="smiles",
            label_columns=["y"],
            task_types=["regression"],
            standardize=StandardizeOptions(),
            duplicates="merge",
        )
        start = time.perf_counter()
        cold = featurize_library(lib, Path(tmp) / "ws", **opts)
        t_cold = time.perf_counter() - start
        start = time.perf_counter()
        warm = featurize_library(lib, Path(tmp) / "ws", **opts)
        t_warm = time.perf_counter() - start
        assert warm.cache_hit and not cold.cache_hit
    n = len(cold.graphs)
    print(f"{'library cold (parse+standardize+featurize)':<42} {n / t_cold:>9.0f} mol/s  ({t_cold:.2f} s)")
    print(
        f"{'library warm (workspace cache hit)':<42} {n / t_warm:>9.0f} mol/s  ({t_warm * 1000:.0f} ms)"
        f"  {t_cold / t_warm:.0f}x faster than cold"
    )


if __name__ == "__main__":
    main()
