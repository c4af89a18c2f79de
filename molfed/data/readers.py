"""Library file formats read into uniform records, with errors that never quote data.

Each reader returns one :class:`Record` per data row. Row numbers follow
:mod:`molfed.errors` (CSV/TSV line number with the header as line 1; SDF record
number; Parquet 1-based row index). The file is read once: its digest and its
contents come from the same bytes.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypedDict

from rdkit import Chem, rdBase

from molfed.chem.standardize import REASON_TEXT, clean_log_text, parse_smiles, sanitize_reason
from molfed.data.labels import is_pandas_na
from molfed.errors import InputError

__all__ = ["SUPPORTED_SUFFIXES", "STRUCTURE_COLUMN_SDF", "Record", "read_records", "suffix_of"]

SUPPORTED_SUFFIXES: Final = (".csv", ".csv.gz", ".tsv", ".sdf", ".parquet")
STRUCTURE_COLUMN_SDF: Final = "molblock"
_HIDDEN = "<hidden: looks like data>"
_DELIMITERS = (",", ";", "\t", "|")
_SPLIT_CELLS = re.compile(r"[,;\t|]")


class _Where(TypedDict):
    """Where an error occurred: passed on to :class:`InputError`."""

    path: str
    partner: str | None


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One data row before any chemistry.

    Attributes
    ----------
    row
        Source row number.
    structure
        SMILES text, or (SDF) a sanitized molecule, or ``None`` for an SDF record
        RDKit could not use.
    labels
        Raw label cells, one per label column.
    reason
        Failure category when ``structure`` is ``None`` (SDF only).
    detail
        RDKit's message for a failed SDF record (partner-local rejects only).
    """

    row: int
    structure: str | Chem.Mol | None
    labels: tuple[object, ...]
    reason: str = ""
    detail: str = ""


def suffix_of(path: Path) -> str | None:
    """The supported suffix ``path`` ends with (case-insensitive), or ``None``."""
    name = path.name.lower()
    return next((s for s in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def read_records(
    path: Path, smiles_column: str, label_columns: Sequence[str], partner: str | None
) -> tuple[str, list[Record]]:
    """Read a library file into records.

    Returns
    -------
    tuple
        SHA-256 (hex) of the file's bytes, and the records.

    Raises
    ------
    InputError
        Missing file, directory, unsupported suffix, unreadable, empty, header-only,
        not UTF-8, malformed rows, or a missing column.
    """
    where: _Where = {"path": str(path), "partner": partner}
    if path.is_dir():
        raise InputError("is a directory, expected a library file", **where)
    if not path.exists():
        raise InputError(missing_reason(path), **where)
    suffix = suffix_of(path)
    if suffix is None:
        raise InputError(f"unsupported file type; supported suffixes are {list(SUPPORTED_SUFFIXES)}", **where)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({type(exc).__name__})", **where) from None
    digest = hashlib.sha256(data).hexdigest()
    if suffix == ".csv.gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise InputError("not a readable gzip file", **where) from None
    if not data.strip():
        raise InputError("file is empty", **where)
    if suffix == ".parquet":
        records = _read_parquet(data, smiles_column, label_columns, where)
    elif suffix == ".sdf":
        _decode(data, where, sdf=True)
        records = _read_sdf(data, label_columns, where)
    else:
        text = _decode(data, where, sdf=False)
        delimiter = "\t" if suffix == ".tsv" else ","
        records = _read_delimited(text, delimiter, smiles_column, label_columns, where)
    if not records:
        raise InputError("no data rows (only a header)", **where)
    return digest, records


def missing_reason(path: Path) -> str:
    """Why ``path``, which does not exist as far as ``Path.exists`` can tell, cannot be opened (no traceback)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic-link loop; point the path at the library file itself"
        if path.is_symlink():
            return "broken symbolic link (its target does not exist)"
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return f"cannot open the file ({type(exc).__name__})"
    return "file not found"


def _decode(data: bytes, where: _Where, *, sdf: bool) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        row = head.count(b"$$$$") + 1 if sdf else head.count(b"\n") + 1
        raise InputError("file is not valid UTF-8 text; save it as UTF-8", row=row, **where) from None


def _column_index(
    names: Sequence[str], column: str, where: _Where, kind: str = "columns", delimiter: str | None = None
) -> int:
    hits = [i for i, name in enumerate(names) if name == column]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InputError(f"column appears {len(hits)} times", column=column, **where)
    shown = [_HIDDEN if _looks_like_data(n) else n for n in names]
    hint = " (is the header row missing?)" if _HIDDEN in shown else ""
    if delimiter is not None and len(names) == 1:
        other = next((d for d in _DELIMITERS if d != delimiter and d in names[0]), None)
        if other is not None:
            hint += f" (is the delimiter {other!r}? expected {delimiter!r})"
    raise InputError(f"column not found; {kind} are {shown}{hint}", column=column, **where)


def _looks_like_data(name: str) -> bool:
    """True for a header cell that is, or holds (in a wrongly delimited file), a number or a molecule."""
    return any(_is_value(part.strip()) for part in [name, *_SPLIT_CELLS.split(name)] if part.strip())


def _is_value(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        mol, _ = parse_smiles(text)
        return mol is not None and mol.GetNumAtoms() > 1


_EXCEL_SEP = re.compile(r"sep=(.?)[ \t]*(\r\n|\n|\r|$)")


def _strip_excel_sep(text: str, delimiter: str, where: _Where) -> str:
    """Excel's ``sep=,`` first line (it names the delimiter; Excel writes it on request): accepted and skipped when
    it names the delimiter expected here, refused with a hint otherwise. Line numbers are kept."""
    match = _EXCEL_SEP.match(text)
    if match is None:
        return text
    declared = match.group(1)
    if declared != delimiter:
        raise InputError(
            f"Excel's delimiter line declares {declared!r} as the delimiter, expected {delimiter!r}: "
            f"save the file with {delimiter!r} as the delimiter and delete line 1",
            row=1,
            **where,
        )
    return match.group(2) + text[match.end() :]  # a blank line 1: the header is found on line 2


def _read_delimited(
    text: str, delimiter: str, smiles_column: str, label_columns: Sequence[str], where: _Where
) -> list[Record]:
    text = _strip_excel_sep(text, delimiter, where)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[Record] = []
    previous = 0
    try:
        header = next((cells for cells in reader if any(c.strip() for c in cells)), None)
        if header is None:
            raise InputError("file is empty", **where)
        names = [name.strip() for name in header]
        i_smiles = _column_index(names, smiles_column, where, delimiter=delimiter)
        i_labels = [_column_index(names, column, where, delimiter=delimiter) for column in label_columns]
        previous = reader.line_num
        for cells in reader:
            row, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            if len(cells) != len(names):
                spans = " (a quoted field spans lines: unclosed quote?)" if any("\n" in c for c in cells) else ""
                raise InputError(f"expected {len(names)} fields, found {len(cells)}{spans}", row=row, **where)
            records.append(Record(row, cells[i_smiles], tuple(cells[i] for i in i_labels)))
    except csv.Error as exc:
        if "field limit" in str(exc):  # also what an unclosed quote early in a big file runs into
            message = f"a field is longer than {csv.field_size_limit()} characters (check quoting)"
        else:
            message = "malformed CSV (check quoting)"
        raise InputError(message, row=previous + 1, **where) from None
    return records


def _read_sdf(data: bytes, label_columns: Sequence[str], where: _Where) -> list[Record]:
    last = data.rfind(b"$$$$")
    if last >= 0 and not data[last + 4 :].strip():
        # Blank lines after the last "$$$$" would make the reader return one more, empty, record: not a row.
        data = data[: last + 4] + b"\n"
    supplier = Chem.ForwardSDMolSupplier(io.BytesIO(data), sanitize=False, removeHs=False)
    records: list[Record] = []
    properties: set[str] = set()
    while True:
        with rdBase.CaptureErrorLog() as capture:
            try:
                mol = next(supplier)
            except StopIteration:
                break
            reason = "unparsable_molecule_block" if mol is None else sanitize_reason(mol)
            if mol is not None and reason is None:
                _assign_stereo(mol)
        row = len(records) + 1
        if mol is None or reason is not None:
            detail = clean_log_text(capture.messages) or REASON_TEXT.get(reason or "", "")
            records.append(Record(row, None, (), reason or "", detail))
            continue
        names = set(mol.GetPropNames())
        properties |= names
        records.append(Record(row, mol, tuple(mol.GetProp(c) if c in names else "" for c in label_columns)))
    if any(r.structure is not None for r in records):
        for column in label_columns:
            if column not in properties:
                _column_index(sorted(properties), column, where, kind="properties")
    return records


def _assign_stereo(mol: Chem.Mol) -> None:
    """Perceive stereochemistry from coordinates/wedges (skipped when reading unsanitized)."""
    if mol.GetNumConformers():
        if mol.GetConformer().Is3D():
            Chem.AssignStereochemistryFrom3D(mol)
            return
        Chem.AssignChiralTypesFromBondDirs(mol)
        Chem.DetectBondStereochemistry(mol)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)


def _read_parquet(data: bytes, smiles_column: str, label_columns: Sequence[str], where: _Where) -> list[Record]:
    import pandas as pd  # only for Parquet: keeps pandas out of every worker process's start-up

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types; the text is not shown
        raise InputError(f"not a readable Parquet file ({type(exc).__name__})", **where) from None
    names = [str(c) for c in frame.columns]
    i_smiles = _column_index(names, smiles_column, where)
    i_labels = [_column_index(names, column, where) for column in label_columns]
    smiles = [_text(v) for v in _column_values(frame, i_smiles, names, where)]
    labels = list(zip(*(_column_values(frame, i, names, where) for i in i_labels), strict=True))
    return [Record(i + 1, s, tuple(cells)) for i, (s, cells) in enumerate(zip(smiles, labels, strict=True))]


def _column_values(frame: Any, index: int, names: Sequence[str], where: _Where) -> list[object]:
    """A Parquet column's values; pyarrow raises while converting corrupt or undecodable column data."""
    try:
        values: list[object] = frame.iloc[:, index].tolist()
    except Exception as exc:  # the text may quote cell bytes: not shown
        raise InputError(
            f"column data not readable ({type(exc).__name__}): the Parquet file may be corrupt",
            column=names[index],
            **where,
        ) from None
    return values


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # a binary column; undecodable bytes make an unparsable SMILES
        return value.decode("utf-8", errors="replace")
    if value is None or is_pandas_na(value) or (isinstance(value, float) and value != value):
        return ""
    return str(value)
