"""A partner's compound library: parsing, standardization, label checks, duplicates.

Bad molecules are data: every input row ends up kept, merged into an earlier row
(counted in ``Library.n_duplicates_merged``) or as a :class:`Reject` that stays with
the partner (see :func:`write_rejects`). Problems with the file itself raise
:class:`~molfed.errors.InputError`, whose text names the file, row and column but
never a SMILES or label value (exception texts and logs reach Prefect's database).

Row numbers follow :mod:`molfed.errors`: CSV/TSV line number (header = line 1, so the
first data row is row 2; blank lines are skipped but counted), SDF record number,
Parquet 1-based row index.

Reject reasons: ``empty_smiles``, ``unparsable_smiles`` (also a SMILES with whitespace
inside), ``unsanitizable_smiles``, ``empty_molecule``, ``too_large`` (over
:data:`~molfed.chem.standardize.MAX_HEAVY_ATOMS` heavy atoms or
:data:`~molfed.chem.standardize.MAX_SMILES_LENGTH` characters), ``wildcard_atom`` (``*``,
R-groups), ``non_ascii_smiles`` (a character outside ASCII: RDKit could read another
molecule), ``unparsable_molecule_block`` (SDF), ``missing_label`` (all labels of the row
empty), ``non_numeric_label``, ``non_finite_label`` (also beyond float32's range),
``invalid_class_label`` (classification label not 0/1), ``conflicting_duplicate``,
``duplicate``. See ``tests/badinput/README.md`` for a case of each. Kept rows can carry a note
(:attr:`Library.notes`, also written to ``rejects.csv``): ``disagreeing_duplicate``, merged regression
labels that span more than the library's standard deviation of the label.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from rdkit import Chem, rdBase

from molfed.chem.encode import MolCodes, encode_pickles, split_codes
from molfed.chem.standardize import StandardizeOptions, parse_smiles, reason_detail, standardize_mol
from molfed.data.labels import Candidate, DuplicateReject, parse_label, resolve_duplicates
from molfed.data.parallel import map_chunks
from molfed.data.readers import STRUCTURE_COLUMN_SDF, Record, read_records, suffix_of
from molfed.data.split import murcko_scaffold
from molfed.errors import InputError

__all__ = [
    "Library",
    "Outcome",
    "Reject",
    "TaskType",
    "file_digest",
    "open_rejects",
    "process_chunk",
    "read_library",
    "write_rejects",
]

logger = logging.getLogger(__name__)

TaskType = Literal["regression", "classification"]
DuplicatePolicy = Literal["merge", "keep_first", "reject"]
_DEFAULT_STANDARDIZE = StandardizeOptions()


@dataclass(frozen=True, slots=True)
class Reject:
    """One input row that was not used.

    Attributes
    ----------
    row
        Source row number (see the module docstring).
    reason
        Category (see the module docstring); safe to log and to count.
    column
        Column (or SDF property) concerned; ``"molblock"`` for an SDF structure.
    detail
        Specifics, which may contain the SMILES or RDKit's message: for the
        partner's own ``rejects.csv`` only, never for logs or exceptions.
    """

    row: int
    reason: str
    column: str
    detail: str


@dataclass(frozen=True, slots=True, eq=False)
class Library:
    """A partner library after parsing, standardization, label checks and duplicate handling.

    Attributes
    ----------
    mols
        Standardized molecules, ``n`` of them; ``None`` when read with ``featurize=True`` (``codes`` and
        ``scaffolds`` hold what is needed of them, and workers need not send molecules back).
    smiles
        Canonical SMILES of the molecules (partner-side only).
    inchikeys
        InChIKeys of the molecules (empty string where InChI failed).
    labels
        float32 ``[n, n_tasks]``; NaN marks a missing label for that task.
    rows
        Source row of each molecule (the first row of merged duplicates).
    rejects
        Rejected rows, sorted by row.
    n_input_rows
        Data rows read (``len(mols) + n_duplicates_merged + len(rejects)``).
    n_duplicates_merged
        Rows merged into an earlier row of the same molecule.
    digest
        SHA-256 (hex) of the library file's bytes.
    codes
        Graph codes of the molecules (:func:`~molfed.chem.encode.encode_mol`), when read with ``featurize=True``.
    scaffolds
        Murcko scaffold SMILES of the molecules, when read with ``featurize=True``.
    """

    mols: tuple[Chem.Mol, ...] | None
    smiles: tuple[str, ...]
    inchikeys: tuple[str, ...]
    labels: np.ndarray
    rows: tuple[int, ...]
    rejects: tuple[Reject, ...]
    n_input_rows: int
    n_duplicates_merged: int
    digest: str
    codes: tuple[MolCodes, ...] | None = None
    scaffolds: tuple[str, ...] | None = None
    notes: tuple[Reject, ...] = ()
    """Kept rows to review (reason ``disagreeing_duplicate``: merged rows whose labels disagree widely); they
    go to ``rejects.csv`` with the rejects but are not rejects."""

    def __len__(self) -> int:
        return len(self.smiles)

    def report_rows(self) -> list[Reject]:
        """What ``rejects.csv`` lists: the rejects and the notes, by row."""
        return sorted(self.rejects + self.notes, key=lambda r: r.row)

    def reject_counts(self) -> dict[str, int]:
        """Number of rejected rows per reason, sorted by reason (safe to log)."""
        return dict(sorted(Counter(r.reason for r in self.rejects).items()))


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def read_library(
    path: str | Path,
    *,
    smiles_column: str = "smiles",
    label_columns: Sequence[str],
    task_types: Sequence[TaskType],
    standardize: StandardizeOptions = _DEFAULT_STANDARDIZE,
    duplicates: DuplicatePolicy = "merge",
    partner: str | None = None,
    featurize: bool = False,
    workers: int = 1,
) -> Library:
    """Read, check and standardize a partner library.

    Parameters
    ----------
    path
        ``.csv``, ``.csv.gz``, ``.tsv``, ``.sdf`` or ``.parquet`` file. CSV/TSV must be
        UTF-8 (a BOM is fine) with a header row. For SDF, structures come from the
        molecule blocks and labels from the properties named by ``label_columns``.
    smiles_column
        Column holding SMILES (ignored for SDF).
    label_columns
        One column per task; an empty cell is a missing label.
    task_types
        ``"regression"`` (finite float) or ``"classification"`` (0/1, true/false) per task.
    standardize
        Standardization steps applied to every molecule.
    duplicates
        Molecules with equal InChIKey: ``"merge"`` keeps the first row and averages
        labels per task (a classification disagreement makes that task NaN and
        rejects the later rows as ``conflicting_duplicate``; a group left without any
        label is rejected entirely); ``"keep_first"`` rejects later rows as
        ``duplicate``; ``"reject"`` rejects every row of the group as ``duplicate``.
    partner
        Partner name, used to prefix error messages.
    featurize
        Also encode each kept molecule's graph and Murcko scaffold (``Library.codes``, ``Library.scaffolds``),
        in the same pass (and the same worker processes) as parsing and standardization.
    workers
        Processes for the per-molecule work (parse, labels, standardize, InChIKey, and with ``featurize`` the
        graph codes and scaffold). 1 works in this process; more split the rows into chunks handled by a pool
        of that many processes, merged back in row order, so the result does not depend on ``workers``.
        Worth it from a few thousand molecules on (the first pool of a process takes a second or two to start).

    Returns
    -------
    Library

    Raises
    ------
    InputError
        Missing, unreadable, empty, header-only, wrongly encoded or malformed file,
        unsupported suffix, missing column, or no valid molecule at all.
    ValueError
        Inconsistent arguments.
    """
    _check_arguments(smiles_column, label_columns, task_types, duplicates)
    source = Path(path)
    digest, records = read_records(source, smiles_column, tuple(label_columns), partner)
    structure_column = STRUCTURE_COLUMN_SDF if suffix_of(source) == ".sdf" else smiles_column
    candidates: list[Candidate] = []
    rejects: list[Reject] = []
    extras: dict[int, tuple[MolCodes, str]] = {}
    work = partial(
        process_chunk,
        structure_column=structure_column,
        label_columns=tuple(label_columns),
        task_types=tuple(task_types),
        options=standardize,
        featurize=featurize,
    )
    for outcomes in map_chunks(work, records, workers, preload=[__name__]):
        for outcome, extra in outcomes:
            if isinstance(outcome, Reject):
                rejects.append(outcome)
            else:
                candidates.append(outcome)
                if extra is not None:
                    extras[outcome.row] = extra
    notes: list[DuplicateReject] = []
    kept, dup_rejects, n_merged = resolve_duplicates(
        candidates, task_types, duplicates, label_columns=label_columns, structure_column=structure_column, notes=notes
    )
    rejects.extend(Reject(row, reason, col, detail) for row, reason, col, detail in dup_rejects)
    rejects.sort(key=lambda r: r.row)
    counts = Counter(r.reason for r in rejects)
    if not kept:
        summary = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
        message = f"no valid molecules; all {len(records)} rows rejected ({summary})"
        raise InputError(message, path=str(path), partner=partner)
    logger.info(
        "read library %s: %d rows, %d molecules, %d merged duplicates, %d rejected %s",
        source.name,
        len(records),
        len(kept),
        n_merged,
        len(rejects),
        dict(sorted(counts.items())),
    )
    n_tasks = len(label_columns)
    return Library(
        mols=None if featurize else tuple(c.mol for c in kept if c.mol is not None),
        smiles=tuple(c.smiles for c in kept),
        inchikeys=tuple(c.inchikey for c in kept),
        labels=np.array([c.labels for c in kept], dtype=np.float32).reshape(len(kept), n_tasks),
        rows=tuple(c.row for c in kept),
        rejects=tuple(rejects),
        n_input_rows=len(records),
        n_duplicates_merged=n_merged,
        digest=digest,
        codes=tuple(extras[c.row][0] for c in kept) if featurize else None,
        scaffolds=tuple(extras[c.row][1] for c in kept) if featurize else None,
        notes=tuple(Reject(*note) for note in notes),
    )


Outcome = tuple["Candidate | Reject", "tuple[MolCodes, str] | None"]
"""A record's fate, with its graph codes and scaffold when featurized."""


def process_chunk(
    records: Sequence[Record],
    *,
    structure_column: str,
    label_columns: Sequence[str],
    task_types: Sequence[TaskType],
    options: StandardizeOptions,
    featurize: bool,
) -> list[Outcome]:
    """Turn records into candidates or rejects, in order, with graph codes and scaffolds if ``featurize``.

    The per-row work of :func:`read_library` (run in this process or a worker); RDKit's logs are blocked. The
    chunk's molecules are encoded together (:func:`~molfed.chem.encode.encode_pickles`) and then dropped: they
    are not needed any more, and pool processes would otherwise pickle them back.
    """
    outcomes: list[Candidate | Reject] = []
    featurized: list[int] = []  # indices into outcomes
    pickles: list[bytes] = []
    scaffolds: list[str] = []
    with rdBase.BlockLogs():
        for record in records:
            outcome = _process(record, structure_column, label_columns, task_types, options)
            if featurize and isinstance(outcome, Candidate) and outcome.mol is not None:
                featurized.append(len(outcomes))
                pickles.append(outcome.mol.ToBinary())
                scaffolds.append(murcko_scaffold(outcome.mol))
                outcome = replace(outcome, mol=None)
            outcomes.append(outcome)
    extras: list[tuple[MolCodes, str] | None] = [None] * len(outcomes)
    for index, codes, scaffold in zip(featurized, split_codes(encode_pickles(pickles)), scaffolds, strict=True):
        extras[index] = (codes, scaffold)
    return list(zip(outcomes, extras, strict=True))


def _check_arguments(
    smiles_column: str, label_columns: Sequence[str], task_types: Sequence[str], duplicates: str
) -> None:
    if isinstance(label_columns, str) or not label_columns:
        raise ValueError(f"label_columns must be a non-empty sequence of names; got {label_columns!r}")
    if len(task_types) != len(label_columns):
        n_types, n_labels = len(task_types), len(label_columns)
        raise ValueError(f"got {n_types} task_types, expected {n_labels} (one per label column)")
    for task_type in task_types:
        if task_type not in get_args(TaskType):
            raise ValueError(f"unknown task type {task_type!r}; choose from {list(get_args(TaskType))}")
    policies = list(get_args(DuplicatePolicy))
    if duplicates not in policies:
        raise ValueError(f"unknown duplicates policy {duplicates!r}; choose from {policies}")
    if smiles_column in label_columns or len(set(label_columns)) != len(label_columns):
        raise ValueError(
            f"got label_columns {list(label_columns)!r}, expected distinct names other than the SMILES column"
        )


def _process(
    record: Record,
    structure_column: str,
    label_columns: Sequence[str],
    task_types: Sequence[TaskType],
    options: StandardizeOptions,
) -> Candidate | Reject:
    """Turn one input record into a candidate molecule or a reject (logs blocked by caller)."""
    if isinstance(record.structure, str):
        mol, reason = parse_smiles(record.structure)
        if mol is None:
            reason = reason or "unparsable_smiles"
            detail = reason_detail(record.structure) if reason != "empty_smiles" else ""
            return Reject(record.row, reason, structure_column, detail or record.structure)
    else:
        mol = record.structure
        if mol is None:
            return Reject(record.row, record.reason, structure_column, record.detail)
    labels: list[float] = []
    for column, task_type, cell in zip(label_columns, task_types, record.labels, strict=True):
        value, reason = parse_label(cell, task_type)
        if reason is not None:
            return Reject(record.row, reason, column, f"value {cell!r}")
        labels.append(value)
    if all(np.isnan(labels)):
        return Reject(record.row, "missing_label", ",".join(label_columns), "all labels empty")
    try:
        std = standardize_mol(mol, options)
    except ValueError as exc:
        return Reject(record.row, "unsanitizable_smiles", structure_column, str(exc))
    if std.GetNumAtoms() == 0:
        return Reject(record.row, "empty_molecule", structure_column, "nothing left after standardization")
    return Candidate(record.row, std, Chem.MolToSmiles(std), Chem.MolToInchiKey(std), tuple(labels))


def write_rejects(rejects: Sequence[Reject], path: Path, *, partner: str | None = None) -> Path:
    """Write rejects as CSV ``row,column,reason,detail`` (header only when there are none).

    The file holds partner data (details carry SMILES): keep it in the partner's
    workspace. Parent folders are created.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If the file cannot be written (e.g. the workspace is a file); ``partner``
        prefixes the message.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_rejects(target) as write:
            write(rejects)
    except OSError as exc:
        why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else type(exc).__name__
        raise InputError(f"cannot write the rejects report ({why})", path=str(target), partner=partner) from None
    return target


@contextmanager
def open_rejects(path: Path) -> Iterator[Callable[[Iterable[Reject]], None]]:
    """Open ``path`` as a rejects report (header ``row,column,reason,detail`` written) and yield a function that
    appends rejects to it, for writers that produce rejects a chunk at a time (:func:`write_rejects` writes them
    all at once).

    The parent folder must exist; an ``OSError`` propagates unchanged.
    """
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("row", "column", "reason", "detail"))
        yield lambda rejects: writer.writerows((r.row, r.column, r.reason, r.detail) for r in rejects)
