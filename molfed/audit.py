"""Leak audit: look for partner structures in everything a run stored (MLflow, Prefect, logs).

Needles are every partner SMILES as written in the library, its RDKit canonical SMILES, the standardized canonical
SMILES and the InChIKeys, built on the partner side into a :class:`HashIndex`: keyed HMAC-SHA256 digests under a
random salt, so the index (and whoever runs the scan) holds no structure in clear text.

The scan reads every file under the given roots as bytes (SQLite databases also row by row, zip and gzip members
decompressed) and extracts maximal runs of SMILES-alphabet characters, plus the parts of a run on either side of
an ``=`` or ``:`` (``smiles=CCO...``). A SMILES needle is a hit when it *is* such a candidate (as in ``"CCO"``,
``CCO,1.2`` or a JSON string): a substring test would flag every public molecule that merely contains a partner's
small molecule (benzene inside aspirin). An InChIKey is a hit anywhere, even inside a longer run.

SMILES shorter than ``min_length`` (default 6, e.g. ``CCO``) are skipped: such strings occur by chance in any
text and prove nothing; every molecule is still covered by its 27-character InChIKey.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import re
import secrets
import sqlite3
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rdkit import Chem, rdBase

_TOKEN = re.compile(rb"[A-Za-z0-9()\[\]=#+\-@/\\%.:*~$]{6,}")
_INCHIKEY = re.compile(rb"[A-Z]{14}-[A-Z]{10}-[A-Z]")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_MAX_MEMBER_BYTES = 256 * 2**20


@dataclass(frozen=True, slots=True)
class Hit:
    path: Path
    kind: str
    """``smiles``, ``inchikey`` or ``substring`` (the needle itself is not reported, so the report can be shared)."""
    needle_index: int
    partner: str = ""
    """The index (partner) the needle belongs to."""
    location: str = ""
    """Inside the file: ``table <name>`` (SQLite rows), ``member <name>`` (zip/gzip), or empty (raw bytes)."""


@dataclass(frozen=True, slots=True)
class HashIndex:
    """Salted digests of one partner's needles: ``digest -> needle number``. Safe to hand to an auditor."""

    name: str
    salt: bytes
    smiles: dict[str, int]
    inchikeys: dict[str, int]

    def digest(self, token: bytes) -> str:
        return hmac.new(self.salt, token, hashlib.sha256).hexdigest()[:32]

    @classmethod
    def build(
        cls, name: str, smiles_needles: Sequence[str], inchikeys: Sequence[str], salt: bytes | None = None
    ) -> HashIndex:
        salt = secrets.token_bytes(16) if salt is None else salt
        index = cls(name, salt, {}, {})
        index.smiles.update({index.digest(s.encode()): i for i, s in enumerate(smiles_needles)})
        index.inchikeys.update({index.digest(k.encode()): i for i, k in enumerate(inchikeys)})
        return index

    def __len__(self) -> int:
        return len(self.smiles) + len(self.inchikeys)


@dataclass
class ScanReport:
    hits: list[Hit] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    rows: int = 0
    """SQLite rows read."""
    tables: int = 0
    members: int = 0
    """Zip/gzip members read."""
    unreadable: list[Path] = field(default_factory=list)


def structure_needles(smiles: Iterable[str], *, min_length: int = 6) -> tuple[list[str], list[str]]:
    """``(smiles_needles, inchikeys)`` for raw SMILES: the raw string, RDKit canonical SMILES, InChIKey."""
    texts: set[str] = set()
    keys: set[str] = set()
    with rdBase.BlockLogs():
        for s in smiles:
            s = s.strip()
            if not s:
                continue
            texts.add(s)
            mol = Chem.MolFromSmiles(s)
            if mol is None:
                continue
            texts.add(Chem.MolToSmiles(mol))
            key = Chem.MolToInchiKey(mol)
            if key:
                keys.add(key)
    long_texts = {t for t in texts if len(t) >= min_length}
    return sorted(long_texts), sorted(keys)


def candidates(data: bytes) -> set[bytes]:
    """SMILES-alphabet runs of ``data`` (>= 6 characters), their parts around ``=``/``:``, and JSON-unescaped forms."""
    out: set[bytes] = set()
    for run in set(_TOKEN.findall(data)):
        out.add(run)
        for sep in (b"=", b":"):
            start = run.find(sep)
            while start != -1:
                out.update((run[:start], run[start + 1 :]))
                start = run.find(sep, start + 1)
    out.update([c.replace(b"\\\\", b"\\") for c in out if b"\\\\" in c])
    return {c for c in out if len(c) >= 6}


def _match(data: bytes, indexes: Sequence[HashIndex], path: Path, location: str, subs: Sequence[bytes]) -> list[Hit]:
    hits: list[Hit] = []
    tokens = candidates(data)
    keys = set(_INCHIKEY.findall(data))
    for index in indexes:
        for digest in sorted({index.digest(t) for t in tokens} & set(index.smiles)):
            hits.append(Hit(path, "smiles", index.smiles[digest], index.name, location))
        for digest in sorted({index.digest(k) for k in keys} & set(index.inchikeys)):
            hits.append(Hit(path, "inchikey", index.inchikeys[digest], index.name, location))
    hits += [Hit(path, "substring", i, "", location) for i, t in enumerate(subs) if t in data]
    return hits


def _sqlite_values(path: Path, report: ScanReport) -> Iterator[tuple[str, bytes]]:
    """``(table, cell bytes)`` for every text/blob cell of every table (read-only)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            report.tables += 1
            quoted = '"' + table.replace('"', '""') + '"'
            for row in conn.execute(f"SELECT * FROM {quoted}"):  # noqa: S608 (names come from sqlite_master)
                report.rows += 1
                for cell in row:
                    if isinstance(cell, str):
                        yield table, cell.encode("utf-8", "surrogatepass")
                    elif isinstance(cell, bytes):
                        yield table, cell
    finally:
        conn.close()


def _members(data: bytes) -> Iterator[tuple[str, bytes]]:
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                yield "gzip", f.read(_MAX_MEMBER_BYTES)
        except (OSError, EOFError):
            return
    elif data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and info.file_size <= _MAX_MEMBER_BYTES:
                        yield info.filename, archive.read(info)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
            return


def scan_files(roots: Sequence[Path], indexes: Sequence[HashIndex], *, substrings: Sequence[str] = ()) -> ScanReport:
    """Scan every file under ``roots`` (files or directories) for the indexes' needles and ``substrings``."""
    report = ScanReport()
    subs = [s.encode() for s in substrings]
    seen: set[Path] = set()
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                data = path.read_bytes()
            except OSError:
                report.unreadable.append(path)
                continue
            report.files += 1
            report.bytes += len(data)
            report.hits += _match(data, indexes, path, "", subs)
            for name, member in _members(data):
                report.members += 1
                report.hits += _match(member, indexes, path, f"member {name}", subs)
            if data.startswith(_SQLITE_MAGIC):
                report.hits += _scan_sqlite(path, indexes, subs, report)
    return report


def _scan_sqlite(path: Path, indexes: Sequence[HashIndex], subs: Sequence[bytes], report: ScanReport) -> list[Hit]:
    hits: set[Hit] = set()
    try:
        for table, value in _sqlite_values(path, report):
            hits.update(_match(value, indexes, path, f"table {table}", subs))
    except sqlite3.Error:
        report.unreadable.append(path)
    return sorted(hits, key=lambda h: (h.location, h.kind, h.needle_index))


def scan(
    roots: Sequence[Path], smiles_needles: Sequence[str], inchikeys: Sequence[str], *, substrings: Sequence[str] = ()
) -> tuple[list[Hit], int]:
    """Scan every file under ``roots`` for needles given in clear text; return hits and the number of files."""
    report = scan_files(roots, [HashIndex.build("needles", smiles_needles, inchikeys)], substrings=substrings)
    return report.hits, report.files
