"""Leak audit: look for partner structures in everything a run stored (MLflow, Prefect, logs).

Needles are every partner SMILES as written in the library, its canonical SMILES and its InChIKey (built on the
partner side). The scan reads every file under the given roots as bytes (SQLite databases included) and extracts
maximal runs of SMILES-alphabet characters once per file. A SMILES needle is a hit when it *is* such a run (as in
``"CCO"``, ``CCO,1.2`` or a JSON string): a substring test would flag every public molecule that merely contains a
partner's small molecule (benzene inside aspirin). An InChIKey is a hit anywhere, even inside a longer run.

SMILES shorter than ``min_length`` (default 6, e.g. ``CCO``) are skipped: such strings occur by chance in any
text and prove nothing; every molecule is still covered by its 27-character InChIKey.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem, rdBase


@dataclass(frozen=True, slots=True)
class Hit:
    path: Path
    kind: str
    """``smiles`` or ``inchikey`` (the needle itself is not reported, so the report can be shared)."""
    needle_index: int


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
    escaped = {t.replace("\\", "\\\\") for t in long_texts if "\\" in t}  # as written inside JSON strings
    return sorted(long_texts | escaped), sorted(keys)


def scan(
    roots: Sequence[Path], smiles_needles: Sequence[str], inchikeys: Sequence[str], *, substrings: Sequence[str] = ()
) -> tuple[list[Hit], int]:
    """Scan every file under ``roots``; return hits and the number of files scanned.

    ``substrings`` (e.g. a partner's private directory) are hits anywhere in a file (kind ``substring``).
    """
    alphabet = set("".join(smiles_needles)) | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    token = re.compile(b"[" + re.escape("".join(sorted(alphabet)).encode()) + b"]{6,}")
    smiles_b = [s.encode() for s in smiles_needles]
    keys_b = {k.encode(): i for i, k in enumerate(inchikeys)}
    subs_b = [t.encode() for t in substrings]
    hits: list[Hit] = []
    n_files = 0
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            n_files += 1
            tokens = set(token.findall(data))
            joined = b"\n".join(tokens)
            hits += [Hit(path, "smiles", i) for i, s in enumerate(smiles_b) if s in tokens]
            hits += [Hit(path, "substring", i) for i, t in enumerate(subs_b) if t in data]
            for k, i in keys_b.items():
                if k in joined:
                    hits.append(Hit(path, "inchikey", i))
    return hits, n_files
