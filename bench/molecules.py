"""Distinct valid molecules for benchmarks: FreeSolv's molecules and analogs made by substituting hydrogens.

Analogs put one to three substituents (halogens, methyl, hydroxy, amino, nitrile, ...) on carbons that carry a
hydrogen; canonical SMILES make them distinct. Deterministic; nothing is written unless asked.

    python bench/molecules.py 100000 out.csv     # SMILES + a synthetic label, one row per molecule
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import datamol as dm
from rdkit import Chem, rdBase

SUBSTITUENTS = ("F", "Cl", "Br", "C", "O", "N", "C#N", "OC", "C(F)(F)F", "C(=O)O", "CC", "S", "C=O", "N(C)C")


def _substitute(parent: Chem.Mol, positions: tuple[int, ...], groups: tuple[str, ...]) -> str | None:
    smiles = Chem.MolToSmiles(parent, rootedAtAtom=positions[0]) if len(positions) == 1 else None
    if smiles is not None:  # fast path: the root atom comes first; append the group as its first branch
        head, tail = _split_first_atom(smiles)
        mol = Chem.MolFromSmiles(f"{head}({groups[0]}){tail}")
    else:
        rw = Chem.RWMol(parent)
        for pos, group in zip(positions, groups, strict=True):
            frag = Chem.MolFromSmiles(group)
            offset = rw.GetNumAtoms()
            rw.InsertMol(frag)
            rw.AddBond(pos, offset, Chem.BondType.SINGLE)
            atom = rw.GetAtomWithIdx(pos)
            atom.SetNumExplicitHs(0)
            atom.SetNoImplicit(False)
        mol = rw.GetMol()
        try:
            Chem.SanitizeMol(mol)
        except Exception:
            return None
    return None if mol is None else Chem.MolToSmiles(mol)


def _split_first_atom(smiles: str) -> tuple[str, str]:
    if smiles.startswith("["):
        end = smiles.index("]") + 1
    elif smiles[:2] in ("Cl", "Br"):
        end = 2
    else:
        end = 1
    while end < len(smiles) and (smiles[end].isdigit() or smiles[end] == "%"):
        end += 1
    return smiles[:end], smiles[end:]


def molecules(n: int, seed: int = 0) -> Iterator[str]:
    """Yield ``n`` distinct canonical SMILES: FreeSolv's, then single, double, triple substitution analogs."""
    rng = random.Random(seed)
    parents = [Chem.MolFromSmiles(s) for s in dm.data.freesolv()["smiles"]]
    seen: set[str] = set()
    with rdBase.BlockLogs():
        for mol in parents:
            smi = Chem.MolToSmiles(mol)
            if smi not in seen:
                seen.add(smi)
                yield smi
                if len(seen) >= n:
                    return
        sites = [[a.GetIdx() for a in m.GetAtoms() if a.GetSymbol() == "C" and a.GetTotalNumHs() > 0] for m in parents]
        for depth in (1, 2, 3):
            combos = []
            for i, s in enumerate(sites):
                for pos in itertools.combinations(s, depth):
                    combos.append((i, pos))
            rng.shuffle(combos)
            for i, pos in combos:
                for groups in itertools.product(SUBSTITUENTS, repeat=depth):
                    smi = _substitute(parents[i], pos, groups)
                    if smi is not None and smi not in seen:
                        seen.add(smi)
                        yield smi
                        if len(seen) >= n:
                            return
    raise ValueError(f"could only make {len(seen)} distinct molecules")


def write_library(path: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` molecules as ``smiles,y`` CSV (``y``: a deterministic synthetic label)."""
    with Path(path).open("w") as handle:
        handle.write("smiles,y\n")
        for i, smi in enumerate(molecules(n, seed)):
            handle.write(f"{smi},{(len(smi) % 17) / 4 - 2 + (i % 5) / 10:.2f}\n")
    return Path(path)


if __name__ == "__main__":
    write_library(Path(sys.argv[2]), int(sys.argv[1]))
