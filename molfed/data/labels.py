"""Label cells and duplicate molecules: the label semantics behind ``read_library``.

Nothing here logs or raises with cell values; problems are returned as reason
categories for the partner's rejects report.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np
from rdkit import Chem

__all__ = ["DISAGREEING", "Candidate", "DuplicateReject", "parse_label", "resolve_duplicates"]

_TRUE = frozenset({"1", "1.0", "true"})
_FALSE = frozenset({"0", "0.0", "false"})
_NAN = float("nan")
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# (row, reason, column, detail), turned into ``Reject`` by the caller.
DuplicateReject = tuple[int, str, str, str]

DISAGREEING = "disagreeing_duplicate"
"""Reason of a note (not a reject): regression labels of one molecule's rows that span more than the library's
standard deviation of that label; the rows are still merged to their mean."""


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """A row that passed parsing, label checks and standardization.

    Attributes
    ----------
    row
        Source row number.
    mol
        Standardized molecule; ``None`` once featurized (:func:`~molfed.data.library.process_chunk` drops it so
        that worker processes do not pickle molecules back).
    smiles
        Canonical SMILES of ``mol``.
    inchikey
        InChIKey of ``mol`` ("" when InChI failed).
    labels
        One float per task, NaN when missing.
    """

    row: int
    mol: Chem.Mol | None
    smiles: str
    inchikey: str
    labels: tuple[float, ...]


def parse_label(cell: object, task_type: str) -> tuple[float, str | None]:
    """Interpret one label cell.

    Parameters
    ----------
    cell
        Text (CSV/TSV/SDF) or a scalar (Parquet). Empty text, ``None`` and a Parquet
        null (NaN, ``pd.NA``) mean "missing".
    task_type
        ``"regression"``: any float that is finite as float32 (|x| < 3.4e38; larger
        values are ``non_finite_label``). ``"classification"``: 0 or 1, also
        ``"0.0"``, ``"1.0"``, ``"true"``, ``"false"`` (case-insensitive).

    Returns
    -------
    tuple
        ``(value, None)`` (value NaN when missing) or ``(nan, reason)`` with reason
        ``non_numeric_label``, ``non_finite_label`` or ``invalid_class_label``.
    """
    if isinstance(cell, str):
        text = cell.strip()
        if not text:
            return _NAN, None
        low = text.lower()
        if task_type == "classification" and (low in _TRUE or low in _FALSE):
            return (1.0 if low in _TRUE else 0.0), None
        if "_" in text:  # float() would accept "1_000"
            return _NAN, "non_numeric_label"
        try:
            value = float(text)
        except ValueError:
            return _NAN, "non_numeric_label"
    elif cell is None or is_pandas_na(cell):
        return _NAN, None
    elif isinstance(cell, Decimal):  # a Parquet decimal column (e.g. exported from a database)
        if not cell.is_finite():
            return _NAN, "non_finite_label"
        value = float(cell)
    elif isinstance(cell, bool | np.bool_ | int | float | np.integer | np.floating):
        value = float(cell)
        if math.isnan(value):  # a Parquet null in a float column
            return _NAN, None
    else:
        return _NAN, "non_numeric_label"
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:  # labels are stored as float32
        return _NAN, "non_finite_label"
    if task_type == "classification" and value not in (0.0, 1.0):
        return _NAN, "invalid_class_label"
    return value, None


def resolve_duplicates(
    candidates: Sequence[Candidate],
    task_types: Sequence[str],
    policy: str,
    *,
    label_columns: Sequence[str],
    structure_column: str,
    notes: list[DuplicateReject] | None = None,
) -> tuple[list[Candidate], list[DuplicateReject], int]:
    """Group candidates by InChIKey (canonical SMILES when InChI failed) and apply a policy.

    Parameters
    ----------
    candidates
        In row order.
    task_types
        One per label column.
    policy
        ``"merge"``, ``"keep_first"`` or ``"reject"`` (see ``read_library``).
    label_columns, structure_column
        Column names for the rejects.

    notes
        With ``"merge"``, receives one :data:`DISAGREEING` note per molecule and regression task whose merged labels
        span more than that label's standard deviation over all ``candidates`` (the rows are merged all the same;
        the note lets the partner review them in its rejects report).

    Returns
    -------
    tuple
        Kept candidates in row order, duplicate rejects, number of rows merged.
    """
    spread_limit = _label_sd(candidates, task_types)
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(cand.inchikey or f"smiles:{cand.smiles}", []).append(cand)
    kept: list[Candidate] = []
    rejects: list[DuplicateReject] = []
    n_merged = 0
    for group in groups.values():
        first, later = group[0], group[1:]
        if not later:
            kept.append(first)
        elif policy == "keep_first":
            kept.append(first)
            detail = f"same molecule as row {first.row}"
            rejects += [(c.row, "duplicate", structure_column, detail) for c in later]
        elif policy == "reject":
            detail = f"same molecule in rows {[c.row for c in group]}"
            rejects += [(c.row, "duplicate", structure_column, detail) for c in group]
        else:
            labels, conflicts = _merge_labels(group, task_types)
            if notes is not None:
                notes += _disagreements(group, labels, spread_limit, label_columns)
            if not conflicts:
                n_merged += len(later)
                kept.append(replace(first, labels=labels))
                continue
            names = [label_columns[t] for t in conflicts]
            detail = f"classification labels disagree across rows {[c.row for c in group]} for {names}"
            losers = group if all(math.isnan(v) for v in labels) else later
            rejects += [(c.row, "conflicting_duplicate", names[0], detail) for c in losers]
            if losers is later:
                kept.append(replace(first, labels=labels))
    return kept, rejects, n_merged


def _label_sd(candidates: Sequence[Candidate], task_types: Sequence[str]) -> list[float]:
    """Per task: the standard deviation of its labels over all rows (regression with 3+ labels), else inf."""
    if not candidates:
        return [math.inf] * len(task_types)
    table = np.array([c.labels for c in candidates], dtype=np.float64).reshape(len(candidates), len(task_types))
    out = []
    for task, task_type in enumerate(task_types):
        present = table[:, task][~np.isnan(table[:, task])]
        ok = task_type == "regression" and present.size >= 3
        out.append(float(present.std()) if ok and present.std() > 0 else math.inf)
    return out


def _disagreements(
    group: Sequence[Candidate], merged: Sequence[float], limits: Sequence[float], label_columns: Sequence[str]
) -> list[DuplicateReject]:
    """Notes for the tasks whose labels in ``group`` span more than ``limits``."""
    table = np.array([c.labels for c in group], dtype=np.float64)
    notes = []
    for task, limit in enumerate(limits):
        present = table[:, task][~np.isnan(table[:, task])]
        if present.size >= 2 and float(present.max() - present.min()) > limit:
            rows = [c.row for c, v in zip(group, table[:, task], strict=True) if not math.isnan(v)]
            detail = (
                f"kept as the mean {merged[task]:.4g} of rows {rows} (labels {[float(f'{v:.4g}') for v in present]}, "
                f"range {float(present.max() - present.min()):.3g} > the library's standard deviation {limit:.3g}); "
                "check these measurements"
            )
            notes.append((group[0].row, DISAGREEING, label_columns[task], detail))
    return notes


def _merge_labels(group: Sequence[Candidate], task_types: Sequence[str]) -> tuple[tuple[float, ...], list[int]]:
    """Per task: mean of present labels; NaN and a conflict for disagreeing class labels."""
    table = np.array([c.labels for c in group], dtype=np.float64)
    merged: list[float] = []
    conflicts: list[int] = []
    for task, task_type in enumerate(task_types):
        present = table[:, task][~np.isnan(table[:, task])]
        if present.size == 0:
            merged.append(_NAN)
        elif task_type == "classification" and np.unique(present).size > 1:
            merged.append(_NAN)
            conflicts.append(task)
        else:
            merged.append(float(present.mean()))
    return tuple(merged), conflicts


def is_pandas_na(value: object) -> bool:
    """``value is pandas.NA``, without importing pandas (no value can be ``pd.NA`` before pandas is imported;
    worker processes that never read Parquet start faster without it)."""
    pd = sys.modules.get("pandas")
    return pd is not None and value is pd.NA
