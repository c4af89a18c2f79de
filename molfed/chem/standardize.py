"""Parsing and standardization of molecules, without leaking structures into logs.

RDKit writes the offending SMILES into its log when parsing fails. Every parse here
runs with ``rdBase.BlockLogs()`` active; RDKit's reason text is only obtained on
request by :func:`reason_detail`, which is meant for the partner-local rejects file.

Failure categories returned by :func:`parse_smiles` (a fixed set, safe to log):

``empty_smiles``
    The cell is empty or only whitespace.
``unparsable_smiles``
    RDKit's SMILES grammar rejects the text.
``unsanitizable_smiles``
    The text parses but the chemistry is impossible (e.g. a pentavalent carbon,
    an aromatic ring that cannot be kekulized).
``empty_molecule``
    The text parses to a molecule with no atoms.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize

__all__ = [
    "PARSE_REASONS",
    "StandardizeOptions",
    "parse_smiles",
    "reason_detail",
    "sanitize_reason",
    "standardize_mol",
]

logger = logging.getLogger(__name__)

PARSE_REASONS: Final = ("empty_smiles", "unparsable_smiles", "unsanitizable_smiles", "empty_molecule")
_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s?")


@dataclass(frozen=True, slots=True)
class StandardizeOptions:
    """Which standardization steps to apply after RDKit's ``Cleanup``.

    Attributes
    ----------
    largest_fragment
        Keep only the largest organic fragment (strips salts and solvents).
    neutralize
        Neutralize charges where a neutral form exists (``Uncharger``).
    canonical_tautomer
        Replace the molecule by RDKit's canonical tautomer (slow; off by default).
    """

    largest_fragment: bool = True
    neutralize: bool = True
    canonical_tautomer: bool = False


def sanitize_reason(mol: Chem.Mol | None) -> str | None:
    """Sanitize an unsanitized molecule in place and return a failure category.

    Parameters
    ----------
    mol
        Molecule parsed with ``sanitize=False``, or ``None`` when parsing failed.

    Returns
    -------
    str or None
        ``None`` when ``mol`` is usable, else one of :data:`PARSE_REASONS`.
    """
    if mol is None:
        return "unparsable_smiles"
    if mol.GetNumAtoms() == 0:
        return "empty_molecule"
    try:
        Chem.SanitizeMol(mol)
    except (Chem.rdchem.MolSanitizeException, RuntimeError, ValueError):
        return "unsanitizable_smiles"
    return None


def parse_smiles(smiles: str) -> tuple[Chem.Mol | None, str | None]:
    """Parse and sanitize one SMILES string.

    Parameters
    ----------
    smiles
        SMILES text; surrounding whitespace is ignored.

    Returns
    -------
    tuple
        ``(mol, None)`` on success, ``(None, reason)`` otherwise, where ``reason`` is
        one of :data:`PARSE_REASONS`. Nothing is logged and nothing is raised.
    """
    text = smiles.strip() if isinstance(smiles, str) else ""
    if not text:
        return None, "empty_smiles"
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text, sanitize=False)
        reason = sanitize_reason(mol)
    if reason is not None:
        return None, reason
    return mol, None


def reason_detail(smiles: str) -> str:
    """RDKit's own explanation of why a SMILES fails, for the partner-local rejects file.

    The text usually contains the SMILES itself: never log it, never raise it.

    Parameters
    ----------
    smiles
        The SMILES text that :func:`parse_smiles` rejected.

    Returns
    -------
    str
        RDKit's messages on one line (``" | "``-joined, timestamps removed); an
        empty string when RDKit had nothing to say.
    """
    text = smiles.strip() if isinstance(smiles, str) else ""
    with rdBase.CaptureErrorLog() as capture:
        mol = Chem.MolFromSmiles(text, sanitize=False)
        if mol is not None:
            try:
                Chem.SanitizeMol(mol)
            except (Chem.rdchem.MolSanitizeException, RuntimeError, ValueError) as exc:
                if not capture.messages:
                    return str(exc)
    return clean_log_text(capture.messages)


def clean_log_text(messages: str) -> str:
    """Join captured RDKit log lines into one line without timestamps."""
    lines = (_TIMESTAMP.sub("", line).strip() for line in messages.splitlines())
    return " | ".join(line for line in lines if line)


class _Standardizers:
    """RDKit standardizer objects, built once per process (they are costly to create)."""

    _instance: _Standardizers | None = None

    def __init__(self) -> None:
        self.chooser = rdMolStandardize.LargestFragmentChooser()
        self.uncharger = rdMolStandardize.Uncharger()
        self.tautomers = rdMolStandardize.TautomerEnumerator()

    @classmethod
    def get(cls) -> _Standardizers:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def standardize_mol(mol: Chem.Mol, options: StandardizeOptions) -> Chem.Mol:
    """Standardize a sanitized molecule with ``rdMolStandardize``.

    Steps: ``Cleanup`` (remove Hs, disconnect metals, normalize functional groups,
    reionize), then optionally the largest fragment, neutralization and the
    canonical tautomer.

    Parameters
    ----------
    mol
        A sanitized molecule; it is not modified.
    options
        Which optional steps to apply.

    Returns
    -------
    Chem.Mol
        A new, sanitized molecule.

    Raises
    ------
    ValueError
        If RDKit fails on the molecule (the message carries no structure).
    """
    tools = _Standardizers.get()
    with rdBase.BlockLogs():
        try:
            out = rdMolStandardize.Cleanup(mol)
            if options.largest_fragment:
                out = tools.chooser.choose(out)
            if options.neutralize:
                out = tools.uncharger.uncharge(out)
            if options.canonical_tautomer:
                out = tools.tautomers.Canonicalize(out)
        except (Chem.rdchem.MolSanitizeException, RuntimeError) as exc:
            raise ValueError(f"standardization failed ({type(exc).__name__})") from None
    return out
