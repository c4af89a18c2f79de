"""Cut one dataset (SMILES + labels) into partner libraries with controlled heterogeneity, for simulations.

Three partitioners return a partner index per molecule, deterministic for a seed:

- :func:`scaffold_partition`: whole Bemis-Murcko scaffold groups per partner (covariate shift: partners see
  different ring systems); acyclic and unparsable molecules have no scaffold and are dealt one by one.
- :func:`dirichlet_partition`: label skew (Hsu et al. 2019): per class, or per label quantile bin for regression,
  partner shares drawn from ``Dirichlet(alpha)``; small ``alpha`` (0.1) gives near-disjoint label ranges.
- :func:`size_partition`: quantity skew: random molecules, partner sizes from given fractions or ``Dirichlet(alpha)``.

:func:`write_partners` writes ``<name>.csv`` files with columns ``smiles,<label>`` that the normal pipeline reads;
:func:`partition_dataset` does both. :func:`heterogeneity_stats` summarizes a split with aggregates only (label
moments and quantiles per partner, scaffold-set Jaccard overlap between partners). All of this needs every
partner's molecules in one place: simulation only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem, rdBase

from molfed.data.split import murcko_scaffold

__all__ = [
    "PARTITIONERS",
    "HeterogeneityStats",
    "dirichlet_partition",
    "heterogeneity_stats",
    "partition_dataset",
    "read_partner_csv",
    "scaffold_partition",
    "size_partition",
    "write_partners",
]


def _check_n(n_partners: int, n_items: int) -> None:
    if not 1 <= n_partners <= max(n_items, 1):
        raise ValueError(f"got n_partners={n_partners}, expected 1..{n_items} (one molecule per partner at least)")


def _scaffolds(smiles: Sequence[str]) -> list[str | None]:
    """Murcko scaffold per SMILES; ``None`` for unparsable ones. RDKit's log is blocked (it prints SMILES)."""
    out: list[str | None] = []
    with rdBase.BlockLogs():
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if s else None
            out.append(None if mol is None else murcko_scaffold(mol))
    return out


def scaffold_partition(
    smiles: Sequence[str], n_partners: int, *, seed: int = 0, fractions: Sequence[float] | None = None
) -> np.ndarray:
    """Partner index per molecule (int64, ``[n]``), keeping every ring scaffold on one partner.

    Ring-scaffold groups are shuffled with ``seed``; groups larger than half the smallest target go first, largest
    first; each group goes to the partner furthest below its target (``fraction * n``, as filled share). Acyclic
    and unparsable molecules follow one at a time, so every partner reaches its target size.

    Raises
    ------
    ValueError
        If ``n_partners`` or ``fractions`` is invalid.
    """
    _check_n(n_partners, len(smiles))
    shares = _fractions(fractions, n_partners)
    groups: dict[str, list[int]] = {}
    singles: list[int] = []
    for i, scaffold in enumerate(_scaffolds(smiles)):
        if scaffold:
            groups.setdefault(scaffold, []).append(i)
        else:
            singles.append(i)
    rng = np.random.default_rng(seed)
    ring = [groups[k] for k in sorted(groups)]
    ring = [ring[i] for i in rng.permutation(len(ring))]
    singles = [singles[i] for i in rng.permutation(len(singles))]
    targets = shares * len(smiles)
    big = targets.min() / 2
    ring.sort(key=lambda g: -len(g) if len(g) > big else 0)  # stable: the small groups stay shuffled
    counts = np.zeros(n_partners)
    out = np.full(len(smiles), -1, np.int64)
    for group in ring + [[i] for i in singles]:
        part = int(np.argmin(counts / targets))
        out[group] = part
        counts[part] += len(group)
    return out


def label_classes(labels: Sequence[float], *, task: str = "regression", n_bins: int = 5) -> np.ndarray:
    """Class per molecule (int64): the label itself for classification, its quantile bin (0..n_bins-1) for
    regression; missing (NaN) labels form one extra class.

    Raises
    ------
    ValueError
        If ``task`` is unknown or ``n_bins < 1``.
    """
    y = np.asarray(labels, np.float64)
    missing = ~np.isfinite(y)
    if task == "classification":
        values = np.unique(y[~missing])
        classes = np.searchsorted(values, np.where(missing, values[0] if len(values) else 0, y))
        return np.where(missing, len(values), classes).astype(np.int64)
    if task != "regression":
        raise ValueError(f"got task {task!r}, expected 'regression' or 'classification'")
    if n_bins < 1:
        raise ValueError(f"got n_bins={n_bins}, expected >= 1")
    finite = y[~missing]
    edges = np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(finite) else np.array([])
    classes = np.searchsorted(edges, np.where(missing, 0.0, y), side="right")
    return np.where(missing, n_bins, classes).astype(np.int64)


def dirichlet_partition(
    labels: Sequence[float],
    n_partners: int,
    *,
    alpha: float,
    seed: int = 0,
    task: str = "regression",
    n_bins: int = 5,
    min_size: int = 10,
    max_tries: int = 1000,
) -> np.ndarray:
    """Partner index per molecule (int64, ``[n]``) with label skew: for each class (:func:`label_classes`), the
    class's molecules are shuffled and cut by shares drawn from ``Dirichlet(alpha * 1)``. Draws are repeated
    (same generator) until every partner has ``min_size`` molecules.

    Raises
    ------
    ValueError
        If ``alpha <= 0``, ``n_partners`` is invalid, or no draw within ``max_tries`` meets ``min_size``.
    """
    _check_n(n_partners, len(labels))
    if not alpha > 0:
        raise ValueError(f"got alpha={alpha}, expected > 0")
    classes = label_classes(labels, task=task, n_bins=n_bins)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        out = np.full(len(classes), -1, np.int64)
        for c in np.unique(classes):
            idx = rng.permutation(np.flatnonzero(classes == c))
            cuts = _cuts(rng.dirichlet(np.full(n_partners, alpha)), len(idx))
            for part, chunk in enumerate(np.split(idx, cuts)):
                out[chunk] = part
        if np.bincount(out, minlength=n_partners).min() >= min_size:
            return out
    raise ValueError(
        f"dirichlet_partition: no draw in {max_tries} gave every partner >= {min_size} molecules "
        f"(alpha={alpha}, {n_partners} partners, {len(classes)} molecules); raise alpha or lower min_size"
    )


def size_partition(
    n: int,
    n_partners: int,
    *,
    seed: int = 0,
    fractions: Sequence[float] | None = None,
    alpha: float = 1.0,
    min_size: int = 10,
    max_tries: int = 1000,
) -> np.ndarray:
    """Partner index per molecule (int64, ``[n]``) with quantity skew only: a random permutation cut by
    ``fractions``, or by shares drawn from ``Dirichlet(alpha * 1)`` (redrawn until every partner has ``min_size``).

    Raises
    ------
    ValueError
        If arguments are invalid or no draw within ``max_tries`` meets ``min_size``.
    """
    _check_n(n_partners, n)
    rng = np.random.default_rng(seed)
    if fractions is not None:
        shares = _fractions(fractions, n_partners)
    else:
        if not alpha > 0:
            raise ValueError(f"got alpha={alpha}, expected > 0")
        for _ in range(max_tries):
            shares = rng.dirichlet(np.full(n_partners, alpha))
            if (np.diff(np.r_[0, _cuts(shares, n), n]) >= min_size).all():
                break
        else:
            raise ValueError(f"size_partition: no draw in {max_tries} gave every partner >= {min_size} molecules")
    cuts = _cuts(shares, n)
    out = np.empty(n, np.int64)
    for part, chunk in enumerate(np.split(rng.permutation(n), cuts)):
        out[chunk] = part
    return out


def _cuts(shares: np.ndarray, n: int) -> np.ndarray:
    """Cut points that split ``n`` items by ``shares`` (rounded cumulative shares, so 0.6/0.3/0.1 of 100 is exact)."""
    return np.rint(np.cumsum(shares)[:-1] * n).astype(np.int64)


def _fractions(fractions: Sequence[float] | None, n_partners: int) -> np.ndarray:
    if fractions is None:
        return np.full(n_partners, 1.0 / n_partners)
    shares = np.asarray(fractions, np.float64)
    if len(shares) != n_partners or (shares <= 0).any() or abs(shares.sum() - 1) > 1e-6:
        raise ValueError(f"got fractions {list(fractions)}, expected {n_partners} positive numbers summing to 1")
    return shares


def write_partners(
    out_dir: str | Path,
    smiles: Sequence[str],
    labels: Sequence[float],
    assignment: Sequence[int] | np.ndarray,
    *,
    label_column: str = "y",
    names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``<name>.csv`` per partner (``smiles,<label_column>``, input order, NaN labels empty); same input,
    same bytes. Returns partner name -> path, in partner order (default names ``partner0``, ``partner1``, ...).

    Raises
    ------
    ValueError
        If lengths differ, an index is outside ``0..len(names)-1``, or a partner would be empty.
    """
    assignment = np.asarray(assignment, np.int64)
    if not len(smiles) == len(labels) == len(assignment):
        raise ValueError(f"got {len(smiles)} SMILES, {len(labels)} labels, {len(assignment)} assignments")
    n_parts = len(names) if names is not None else int(assignment.max(initial=-1)) + 1
    names = list(names) if names is not None else [f"partner{i}" for i in range(n_parts)]
    if len(assignment) and (assignment.min() < 0 or assignment.max() >= n_parts):
        raise ValueError(f"got partner indices {assignment.min()}..{assignment.max()}, expected 0..{n_parts - 1}")
    empty = [names[i] for i in range(n_parts) if not (assignment == i).any()]
    if empty:
        raise ValueError(f"partner(s) {empty} would get no molecules")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for part, name in enumerate(names):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("smiles", label_column))
        for i in np.flatnonzero(assignment == part).tolist():
            y = float(labels[i])
            writer.writerow((smiles[i], repr(y) if math.isfinite(y) else ""))
        paths[name] = out / f"{name}.csv"
        paths[name].write_bytes(buffer.getvalue().encode("utf-8"))
    return paths


PARTITIONERS: dict[str, Callable[..., np.ndarray]] = {
    "scaffold": lambda smiles, labels, n, **kw: scaffold_partition(smiles, n, **kw),
    "dirichlet": lambda smiles, labels, n, **kw: dirichlet_partition(labels, n, **kw),
    "size": lambda smiles, labels, n, **kw: size_partition(len(smiles), n, **kw),
}
"""Method name -> ``fn(smiles, labels, n_partners, **options)`` returning the assignment."""


def partition_dataset(
    smiles: Sequence[str],
    labels: Sequence[float],
    out_dir: str | Path,
    *,
    method: str,
    n_partners: int,
    label_column: str = "y",
    names: Sequence[str] | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Partition with ``method`` (a :data:`PARTITIONERS` key; ``options`` go to its function, e.g. ``seed``,
    ``alpha``) and write the partner CSVs with :func:`write_partners`.

    Raises
    ------
    ValueError
        If ``method`` is unknown (the message lists the choices) or the partitioner rejects its arguments.
    """
    if method not in PARTITIONERS:
        raise ValueError(f"unknown partition method {method!r}; choose from {sorted(PARTITIONERS)}")
    if names is not None and len(names) != n_partners:
        raise ValueError(f"got {len(names)} names, expected n_partners={n_partners}")
    assignment = PARTITIONERS[method](smiles, labels, n_partners, **options)
    return write_partners(out_dir, smiles, labels, assignment, label_column=label_column, names=names)


def read_partner_csv(
    path: str | Path, label_column: str, smiles_column: str = "smiles"
) -> tuple[list[str], list[float]]:
    """SMILES and labels (NaN where empty or not a number) of one partner CSV, for :func:`heterogeneity_stats`."""
    smiles, labels = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            smiles.append(row[smiles_column])
            try:
                labels.append(float(row[label_column]))
            except ValueError:
                labels.append(float("nan"))
    return smiles, labels


@dataclass(frozen=True, slots=True)
class HeterogeneityStats:
    """Aggregates describing how partners differ; no structure or individual label."""

    labels: dict[str, dict[str, float]]
    """Partner -> ``n``, ``mean``, ``std`` (population), ``q10``, ``q25``, ``q50``, ``q75``, ``q90`` of its finite
    labels (NaN statistics for a partner without labels)."""
    n_scaffolds: dict[str, int]
    """Partner -> number of distinct ring scaffolds."""
    scaffold_jaccard: dict[tuple[str, str], float]
    """``(a, b)`` with ``a < b`` -> ``|S_a & S_b| / |S_a | S_b|`` of their ring-scaffold sets (0 if both empty)."""


_QUANTILES = (10, 25, 50, 75, 90)


def heterogeneity_stats(partners: Mapping[str, tuple[Sequence[str], Sequence[float]]]) -> HeterogeneityStats:
    """Label distribution per partner and pairwise ring-scaffold overlap, from ``{name: (smiles, labels)}``.

    Acyclic and unparsable molecules have no ring scaffold and do not count towards the overlap.
    """
    label_stats: dict[str, dict[str, float]] = {}
    sets: dict[str, set[str]] = {}
    for name, (smiles, labels) in partners.items():
        y = np.asarray(labels, np.float64)
        y = y[np.isfinite(y)]
        stats = {"n": float(len(y)), "mean": float(y.mean()) if len(y) else math.nan}
        stats["std"] = float(y.std()) if len(y) else math.nan
        for q in _QUANTILES:
            stats[f"q{q}"] = float(np.percentile(y, q)) if len(y) else math.nan
        label_stats[name] = stats
        sets[name] = {s for s in _scaffolds(smiles) if s}
    jaccard = {}
    for a, b in combinations(sorted(partners), 2):
        union = sets[a] | sets[b]
        jaccard[(a, b)] = len(sets[a] & sets[b]) / len(union) if union else 0.0
    return HeterogeneityStats(label_stats, {n: len(s) for n, s in sets.items()}, jaccard)
