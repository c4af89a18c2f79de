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
``too_large``
    More than :data:`MAX_SMILES_LENGTH` characters or :data:`MAX_HEAVY_ATOMS` heavy
    atoms. Checked before sanitization: RDKit's ring perception and canonical SMILES
    grow super-linearly and, for a 20,000-atom chain, ``MolToSmiles`` crashes the
    process (stack overflow); a 100,000-membered ring exhausted memory in
    sanitization. Drug-like molecules have fewer than 100 heavy atoms; large
    peptides and macrocycles stay well below the limit.
``wildcard_atom``
    A dummy atom (``*``, ``[*:1]``, an SDF ``R#``/query atom): a polymer repeat unit,
    an R-group or an attachment point, not a defined compound.
``non_ascii_smiles``
    A character outside ASCII anywhere in the (stripped) text: a Cyrillic ``О`` typed
    for ``O``, an ``é``, a full-width ``Ｃ``, a zero-width space. RDKit skips some of
    them silently (``"CCО"`` parses as ethane, ``"ＣCO"`` as methanol), so the row would be
    kept as another molecule with its label.

Surrounding whitespace is stripped first, as Python's ``str.strip()`` does: every Unicode
whitespace character (space, tab, CR/LF, vertical tab, form feed, the non-breaking space
U+00A0, U+2000-U+200A, U+3000, ...). Zero-width characters (U+200B, U+FEFF) are not
whitespace: they are ``non_ascii_smiles``. SMILES with whitespace inside (``"CC O"``) are
``unparsable_smiles``: RDKit would read only the text before the space (the rest becomes
the molecule's name) and silently return another molecule. A CXSMILES extension
(``"CCO |$;;$|"``) is the one exception.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize

__all__ = [
    "MAX_HEAVY_ATOMS",
    "MAX_SMILES_LENGTH",
    "PARSE_REASONS",
    "StandardizeOptions",
    "parse_many",
    "parse_smiles",
    "reason_detail",
    "sanitize_reason",
    "standardize_mol",
]

logger = logging.getLogger(__name__)

PARSE_REASONS: Final = (
    "empty_smiles",
    "unparsable_smiles",
    "unsanitizable_smiles",
    "empty_molecule",
    "too_large",
    "wildcard_atom",
    "non_ascii_smiles",
)
MAX_SMILES_LENGTH: Final = 10_000
"""Longest SMILES text parsed (characters, after stripping surrounding whitespace)."""
MAX_HEAVY_ATOMS: Final = 1_000
"""Most heavy (non-hydrogen) atoms a molecule may have."""
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


def sanitize_reason(mol: Chem.Mol | None, text: str | None = None) -> str | None:
    """Sanitize an unsanitized molecule in place and return a failure category.

    Parameters
    ----------
    mol
        Molecule parsed with ``sanitize=False``, or ``None`` when parsing failed.
    text
        The SMILES it was parsed from, if any (lets cheap text checks skip an atom loop).

    Returns
    -------
    str or None
        ``None`` when ``mol`` is usable, else one of :data:`PARSE_REASONS`.
    """
    if mol is None:
        return "unparsable_smiles"
    if mol.GetNumAtoms() == 0:
        return "empty_molecule"
    reason = _structure_reason(mol, text)
    if reason is not None:
        return reason
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
    with rdBase.BlockLogs():
        return _parse(smiles)


def parse_many(smiles: Iterable[str]) -> list[tuple[Chem.Mol | None, str | None]]:
    """:func:`parse_smiles` over many SMILES (one ``BlockLogs`` for all: cheaper per molecule).

    Returns
    -------
    list of tuple
        ``(mol, None)`` or ``(None, reason)`` per input, in input order.
    """
    with rdBase.BlockLogs():
        return [_parse(s) for s in smiles]


def _parse(smiles: str) -> tuple[Chem.Mol | None, str | None]:
    """:func:`parse_smiles`'s work; the caller blocks RDKit's logs."""
    text = smiles.strip() if isinstance(smiles, str) else ""
    if not text:
        return None, "empty_smiles"
    if len(text) > MAX_SMILES_LENGTH:
        return None, "too_large"
    if _inner_whitespace(text):
        return None, "unparsable_smiles"
    if not text.isascii():
        return None, "non_ascii_smiles"
    mol = Chem.MolFromSmiles(text, sanitize=False)
    reason = sanitize_reason(mol, text)
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
    if len(text) > MAX_SMILES_LENGTH:
        return f"SMILES has {len(text)} characters; the limit is {MAX_SMILES_LENGTH}"
    if _inner_whitespace(text):
        return "SMILES contains whitespace; RDKit would ignore the text after it"
    if not text.isascii():
        return _non_ascii_detail(text)
    message = ""
    with rdBase.CaptureErrorLog() as capture:
        mol = Chem.MolFromSmiles(text, sanitize=False)
        reason = _structure_reason(mol) if mol is not None else None
        if reason is not None:
            return REASON_TEXT[reason]
        if mol is not None:
            try:
                Chem.SanitizeMol(mol)
            except (Chem.rdchem.MolSanitizeException, RuntimeError, ValueError) as exc:
                message = str(exc)
    return clean_log_text(capture.messages) or message


REASON_TEXT: Final = {
    "too_large": f"more than {MAX_HEAVY_ATOMS} heavy atoms",
    "wildcard_atom": "contains a wildcard/dummy atom (*, R-group, attachment point)",
}
"""Explanations of molfed's own reasons, where RDKit has nothing to say (for rejects files)."""


def _structure_reason(mol: Chem.Mol, text: str | None = None) -> str | None:
    """``too_large`` or ``wildcard_atom`` for an unsanitized molecule (cheap: before any ring perception).

    With the SMILES ``text`` the atom loop is skipped when the text cannot hold the problem: an atom takes at
    least one character, and a dummy atom needs ``*`` or ``#0`` (``[#0]``); a CXSMILES extension (``|``) can
    relabel atoms, so it always takes the loop.
    """
    if (text is None or len(text) > MAX_HEAVY_ATOMS) and mol.GetNumHeavyAtoms() > MAX_HEAVY_ATOMS:
        return "too_large"
    if text is not None and "*" not in text and "#0" not in text and "|" not in text:
        return None
    if any(atom.GetAtomicNum() == 0 for atom in mol.GetAtoms()):
        return "wildcard_atom"
    return None


def _non_ascii_detail(text: str) -> str:
    """Which non-ASCII character, where (1-based, in the stripped text), and what to do."""
    position, char = next((i, c) for i, c in enumerate(text, 1) if not c.isascii())
    return (
        f"character {position} is U+{ord(char):04X}, not ASCII (a look-alike letter or a typographic character?); "
        "RDKit could read another molecule: retype the SMILES in ASCII"
    )


def _inner_whitespace(text: str) -> bool:
    """Whitespace inside stripped SMILES text, other than before a CXSMILES extension."""
    _, *rest = text.split(maxsplit=1)
    return bool(rest) and not rest[0].startswith("|")


def clean_log_text(messages: str) -> str:
    """Join captured RDKit log lines into one line without timestamps."""
    lines = (_TIMESTAMP.sub("", line).strip() for line in messages.splitlines())
    return " | ".join(line for line in lines if line)


class _Standardizers(threading.local):
    """RDKit standardizer objects, built once per thread (costly to create; not shared across threads).

    ``rdMolStandardize.Cleanup(mol)`` builds its metal disconnector, normalizer (dozens of reaction SMARTS) and
    reionizer on every call; :func:`standardize_mol` runs the same steps with these prebuilt ones instead.
    """

    def __init__(self) -> None:
        self.disconnector = rdMolStandardize.MetalDisconnector()
        self.normalizer = rdMolStandardize.Normalizer()
        self.reionizer = rdMolStandardize.Reionizer()
        self.chooser = rdMolStandardize.LargestFragmentChooser()
        self.uncharger = rdMolStandardize.Uncharger()
        self.tautomers = rdMolStandardize.TautomerEnumerator()


_TOOLS = _Standardizers()


def _cleanup(mol: Chem.Mol) -> Chem.Mol:
    """``rdMolStandardize.Cleanup`` with default parameters: its steps, in its order, with prebuilt tools.

    RDKit's ``cleanupInPlace``: remove Hs, disconnect metals, normalize, reionize, assign stereochemistry
    (``cleanIt=True, force=True``). ``tests/chem`` checks the result equals ``Cleanup``'s.
    """
    out = Chem.RemoveHs(mol)
    _TOOLS.disconnector.DisconnectInPlace(out)
    _TOOLS.normalizer.normalizeInPlace(out)
    _TOOLS.reionizer.reionizeInPlace(out)
    Chem.AssignStereochemistry(out, cleanIt=True, force=True)
    return out


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
    tools = _TOOLS
    with rdBase.BlockLogs():
        try:
            out = _cleanup(mol)
            if options.largest_fragment:
                out = tools.chooser.choose(out)
            if options.neutralize:
                out = tools.uncharger.uncharge(out)
            if options.canonical_tautomer:
                out = tools.tautomers.Canonicalize(out)
        except (Chem.rdchem.MolSanitizeException, RuntimeError) as exc:
            raise ValueError(f"standardization failed ({type(exc).__name__})") from None
    return out
