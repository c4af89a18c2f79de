"""Bemis-Murcko scaffold splits (chemprop's ``scaffold_balanced``).

Molecules sharing a scaffold always land in the same part, so validation and test
measure generalization to unseen chemotypes rather than to near-copies.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

__all__ = ["Split", "murcko_scaffold", "scaffold_split", "split_by_scaffold"]


def murcko_scaffold(mol: Chem.Mol) -> str:
    """Bemis-Murcko scaffold SMILES (chirality dropped); ``""`` for an acyclic molecule."""
    return str(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False))


@dataclass(frozen=True, slots=True, eq=False)
class Split:
    """Indices (int64, sorted ascending) into the molecule sequence for each part.

    Attributes
    ----------
    train, val, test
        Disjoint index arrays covering ``range(n)`` together.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or not all(math.isfinite(f) and f >= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"got fractions {tuple(fractions)!r}, "
            "expected three non-negative numbers summing to 1, e.g. (0.8, 0.1, 0.1)"
        )
    return values[0], values[1], values[2]


def scaffold_split(
    mols: Sequence[Chem.Mol], *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Deterministic balanced scaffold split of molecules.

    Computes :func:`murcko_scaffold` for each molecule and calls :func:`split_by_scaffold`.

    Parameters
    ----------
    mols
        Sanitized molecules.
    fractions
        Target train/validation/test fractions: non-negative, summing to 1.
    seed
        Seed of the group order; the same seed gives the same split.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        If ``fractions`` is invalid.
    """
    _check_fractions(fractions)
    return split_by_scaffold([murcko_scaffold(mol) for mol in mols], fractions=fractions, seed=seed)


def split_by_scaffold(
    scaffolds: Sequence[str], *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Deterministic balanced split of precomputed scaffold strings (chemprop's ``scaffold_balanced``).

    Indices with equal ring scaffold form a group; acyclic molecules (scaffold ``""``) share no ring system, so
    each is a group of its own (one "acyclic" group of hundreds of molecules would otherwise land whole in one
    part: half of FreeSolv is acyclic). Groups larger than half the validation
    or test size come first (in seeded-random order, as in chemprop), then the
    remaining groups in seeded-random order. Each group goes to train if it fits,
    else to validation if it fits, else to test. Finally, a part with a non-zero
    fraction that is still empty receives the smallest group of the part with the
    most molecules among those holding several groups (train may also take a part's
    only group), so tiny data sets give every requested part a molecule where possible.

    Parameters
    ----------
    scaffolds
        One scaffold string per molecule (``""`` for acyclic molecules, each its own group).
    fractions
        Target train/validation/test fractions: non-negative, summing to 1.
    seed
        Seed of the group order; the same seed gives the same split.

    Returns
    -------
    Split
        Scaffold-disjoint parts covering every index exactly once.

    Raises
    ------
    ValueError
        If ``fractions`` is invalid.
    """
    fracs = _check_fractions(fractions)
    n = len(scaffolds)
    groups: dict[str, list[int]] = {}
    for idx, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold or f"acyclic:{idx}", []).append(idx)
    sizes = [f * n for f in fracs]
    is_big = [len(g) > sizes[1] / 2 or len(g) > sizes[2] / 2 for g in groups.values()]
    big = [g for g, b in zip(groups.values(), is_big, strict=True) if b]
    small = [g for g, b in zip(groups.values(), is_big, strict=True) if not b]
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    parts: list[list[list[int]]] = [[], [], []]
    counts = [0, 0, 0]
    overflow = 2 if fracs[2] > 0 else (1 if fracs[1] > 0 else 0)
    for group in big + small:
        target = next((p for p in (0, 1) if counts[p] + len(group) <= sizes[p]), overflow)
        parts[target].append(group)
        counts[target] += len(group)
    _fill_empty_parts(parts, fracs)
    arrays = [np.array(sorted(i for g in part for i in g), dtype=np.int64) for part in parts]
    return Split(train=arrays[0], val=arrays[1], test=arrays[2])


def _fill_empty_parts(parts: list[list[list[int]]], fracs: tuple[float, float, float]) -> None:
    """Move whole groups into requested-but-empty parts where another part can spare one."""
    for empty, frac in enumerate(fracs):
        if frac <= 0 or parts[empty]:
            continue
        minimum = 1 if empty == 0 else 2
        donors = [p for p in range(3) if p != empty and len(parts[p]) >= minimum]
        if not donors:
            continue
        donor = max(donors, key=lambda p: sum(len(g) for g in parts[p]))
        smallest = min(parts[donor], key=len)
        parts[donor].remove(smallest)
        parts[empty].append(smallest)
