"""Molecules to compact integer codes: the RDKit half of featurization (no torch, cheap to run in worker processes).

Each atom becomes one ``int32`` code and each bond one ``uint8`` code: the mixed-radix packing of the
per-block category indices of the features documented in :mod:`molfed.chem.featurize` (e.g. an atom's
element index, degree, charge, ...). Codes are deterministic (the same in every process), 4 bytes per atom
and 9 bytes per bond including its two atom indices, so they are what caches and on-disk shards store;
:func:`molfed.chem.featurize.graphs_from_codes` expands them to one-hot tensors, vectorized.

Speed: the code of each distinct raw RDKit atom (bond) tuple is computed once per process and cached in a
dict, so per molecule the work is one pass of RDKit getters over atoms and bonds, a tuple, a dict lookup and
a list append per atom and bond. :func:`encode_smiles` parses and encodes a batch in one pass into shared lists
(numpy once at the end) and uses the SMILES text to skip getters that cannot matter. What is left is mostly
RDKit's Python API itself: fetching an atom or bond object costs about as much as three plain getters, and
the enum-returning ones (hybridization, bond type, bond stereo) about three times a plain one
(``bench/featurize.py`` prints this floor next to the featurizer).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdqueries

__all__ = [
    "ATOM_BLOCKS",
    "BOND_BLOCKS",
    "CodeArrays",
    "MolCodes",
    "concat_codes",
    "decode_atoms",
    "decode_bonds",
    "encode_mol",
    "encode_smiles",
]

_HT = Chem.HybridizationType
_BT = Chem.BondType
_BS = Chem.BondStereo
_CT = Chem.ChiralType

ELEMENTS: Final = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I")
HYBRIDIZATIONS: Final = ("S", "SP", "SP2", "SP3", "SP3D", "SP3D2")
CHIRALITIES: Final = ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW")
BOND_TYPES: Final = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
# STEREONONE -> 0, Z/CIS -> 1, E/TRANS -> 2, anything else -> 3
BOND_STEREOS: Final = (("STEREONONE",), ("STEREOZ", "STEREOCIS"), ("STEREOE", "STEREOTRANS"))

# (name, width) of each one-hot block, in feature order; a width-1 block is a flag (0/1).
ATOM_BLOCKS: Final = (
    ("atomic_num", len(ELEMENTS) + 1),
    ("degree", 6),
    ("formal_charge", 5),
    ("hybridization", len(HYBRIDIZATIONS) + 1),
    ("aromatic", 1),
    ("total_hs", 5),
    ("in_ring", 1),
    ("chirality", len(CHIRALITIES) + 1),
)
BOND_BLOCKS: Final = (
    ("bond_type", len(BOND_TYPES) + 1),
    ("conjugated", 1),
    ("in_ring", 1),
    ("stereo", len(BOND_STEREOS) + 1),
)

_PT = Chem.GetPeriodicTable()
_Z_INDEX: Final = {_PT.GetAtomicNumber(symbol): i for i, symbol in enumerate(ELEMENTS)}
_HYB_INDEX: Final = {getattr(_HT, name): i for i, name in enumerate(HYBRIDIZATIONS)}
_CHI_INDEX: Final = {getattr(_CT, name): i for i, name in enumerate(CHIRALITIES)}
_BT_INDEX: Final = {getattr(_BT, name): i for i, name in enumerate(BOND_TYPES)}
# Bond orders as GetBondTypeAsDouble returns them; valid shorthand only where no other bond type can share an order
# (a dative bond is 1.0 too: see encode_smiles). SINGLE, DOUBLE and TRIPLE are ints equal to 1.0, 2.0, 3.0 anyway.
_BT_INDEX_BY_ORDER: Final = {1.0: 0, 2.0: 1, 3.0: 2, 1.5: 3}
_ST_INDEX: Final = {getattr(_BS, name): i for i, group in enumerate(BOND_STEREOS) for name in group}


def _radices(blocks: tuple[tuple[str, int], ...]) -> tuple[int, ...]:
    """Number of categories of each block: its width, or 2 for a flag."""
    return tuple(max(width, 2) for _, width in blocks)


ATOM_RADICES: Final = _radices(ATOM_BLOCKS)
BOND_RADICES: Final = _radices(BOND_BLOCKS)
assert int(np.prod(ATOM_RADICES)) < 2**31 and int(np.prod(BOND_RADICES)) < 2**8


def _pack(indices: Sequence[int], radices: Sequence[int]) -> int:
    code = 0
    for index, radix in zip(indices, radices, strict=True):
        code = code * radix + index
    return code


def _atom_code(key: tuple) -> int:
    """The packed code of one raw atom tuple (the feature definitions live here)."""
    z, degree, charge, hybridization, aromatic, n_hs, in_ring, chirality = key
    indices = (
        _Z_INDEX.get(z, len(ELEMENTS)),
        min(degree, 5),
        2 + min(max(charge, -2), 2),
        _HYB_INDEX.get(hybridization, len(HYBRIDIZATIONS)),
        int(aromatic),
        min(n_hs, 4),
        int(in_ring),
        _CHI_INDEX.get(chirality, len(CHIRALITIES)),
    )
    return _pack(indices, ATOM_RADICES)


def _bond_code(key: tuple) -> int:
    """The packed code of one raw bond tuple."""
    bond_type, conjugated, in_ring, stereo = key
    index = _BT_INDEX if isinstance(bond_type, _BT) else _BT_INDEX_BY_ORDER
    indices = (
        index.get(bond_type, len(BOND_TYPES)),
        int(conjugated),
        int(in_ring),
        _ST_INDEX.get(stereo, len(BOND_STEREOS)),
    )
    return _pack(indices, BOND_RADICES)


class MolCodes(NamedTuple):
    """One molecule as codes (compact; pickles as three byte strings)."""

    atoms: array
    """``'i'``: one packed code per atom, in atom index order."""
    bonds: array
    """``'B'``: one packed code per bond, in bond index order."""
    ends: array
    """``'i'``: begin and end atom index of each bond, interleaved (``2 * num_bonds`` values)."""


_HAS_CHIRAL_TAG: Final = rdqueries.HasChiralTagQueryAtom()
_UNSPECIFIED: Final = _CT.CHI_UNSPECIFIED
_STEREONONE: Final = _BS.STEREONONE
# Raw tuple -> code. Plain dicts: a race between threads computes the same value twice, harmlessly.
_ATOM_CODES: dict[tuple, int] = {}
_BOND_CODES: dict[tuple, int] = {}


def encode_mol(mol: Chem.Mol) -> MolCodes:
    """Encode a sanitized molecule (explicit H atoms become nodes).

    Parameters
    ----------
    mol
        A sanitized RDKit molecule (stereochemistry assigned, as after standardization).

    Returns
    -------
    MolCodes
    """
    atoms: list[int] = []
    bonds: list[int] = []
    ends: list[int] = []
    # One C++ query instead of an enum-returning getter per atom when no atom has a chiral tag (most molecules).
    chiral = len(mol.GetAtomsMatchingQuery(_HAS_CHIRAL_TAG)) > 0
    _encode_into(mol, atoms, bonds, ends, chiral=chiral, ringed=True, stereo=True, orders=False)
    return MolCodes(array("i", atoms), array("B", bonds), array("i", ends))


def _encode_into(
    mol: Chem.Mol,
    atoms: list[int],
    bonds: list[int],
    ends: list[int],
    *,
    chiral: bool,
    ringed: bool,
    stereo: bool,
    orders: bool,
) -> None:
    """Append ``mol``'s atom codes, bond codes and bond ends to the given lists.

    ``chiral=False`` promises that no atom has a chiral tag, ``ringed=False`` that the molecule has no ring (so no
    atom or bond is in a ring and, sanitized, none is aromatic), ``stereo=False`` that no bond has a stereo label:
    their getters are then not called. ``orders=True`` promises that every bond is single, double, triple,
    aromatic or of an order none of these has (no dative bond): the bond type is then read as its order, a plain
    float (about a third of the enum getter's cost).
    """
    atom_codes, bond_codes = _ATOM_CODES, _BOND_CODES
    append_atom, append_bond, extend_ends = atoms.append, bonds.append, ends.extend
    # Index access (not mol.GetAtoms()) avoids RDKit's pure-Python sequence wrapper.
    get_atom = mol.GetAtomWithIdx
    for idx in range(mol.GetNumAtoms()):
        atom = get_atom(idx)
        key = (
            atom.GetAtomicNum(),
            atom.GetDegree(),
            atom.GetFormalCharge(),
            atom.GetHybridization(),
            ringed and atom.GetIsAromatic(),
            atom.GetTotalNumHs(),
            ringed and atom.IsInRing(),
            atom.GetChiralTag() if chiral else _UNSPECIFIED,
        )
        try:
            append_atom(atom_codes[key])
        except KeyError:
            append_atom(atom_codes.setdefault(key, _atom_code(key)))
    get_bond = mol.GetBondWithIdx
    for idx in range(mol.GetNumBonds()):
        bond = get_bond(idx)
        extend_ends((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        bkey = (
            bond.GetBondTypeAsDouble() if orders else bond.GetBondType(),
            bond.GetIsConjugated(),
            ringed and bond.IsInRing(),
            bond.GetStereo() if stereo else _STEREONONE,
        )
        try:
            append_bond(bond_codes[bkey])
        except KeyError:
            append_bond(bond_codes.setdefault(bkey, _bond_code(bkey)))


_RING_OR_EXTENSION: Final = frozenset("0123456789%|")
"""A SMILES without these characters has no ring closure, so no ring (a CXSMILES extension could add one)."""
_DIRECTION_OR_EXTENSION: Final = frozenset("/\\|")
"""Parsing labels a double bond's stereo only from directional bonds (or a CXSMILES extension)."""
_DATIVE_OR_EXTENSION: Final = frozenset("<>|")
"""A dative bond (``->``, ``<-``; bond order 1.0 like a single bond) needs these characters."""


def encode_smiles(smiles: Iterable[str]) -> tuple[CodeArrays, tuple[str | None, ...]]:
    """Parse (:func:`~molfed.chem.standardize.parse_smiles`, no standardization) and encode many SMILES.

    One pass: each molecule is encoded into shared lists right after parsing (no per-molecule ``MolCodes``, no
    ``concat_codes``), with RDKit's logs blocked once for the batch. The text spares getter calls: parsing (and
    sanitizing) sets a chiral tag only where the SMILES has ``@`` (or a CXSMILES extension), a bond stereo label
    only where it has ``/`` or ``\\`` (or an extension), a dative bond only with ``<`` or ``>``, and a molecule
    whose SMILES has no ring-closure digit has no ring. The codes equal ``encode_mol(parse_smiles(s)[0])``'s
    (``tests/chem`` checks it on every demo molecule and on tricky ones).

    Parameters
    ----------
    smiles
        SMILES texts.

    Returns
    -------
    codes : CodeArrays
        Codes of the molecules that parsed, in input order.
    reasons : tuple of (str or None)
        Per input, ``None`` if it parsed (and is in ``codes``), else its
        :data:`~molfed.chem.standardize.PARSE_REASONS` category.
    """
    from molfed.chem.standardize import _parse

    atoms: list[int] = []
    bonds: list[int] = []
    ends: list[int] = []
    n_atoms: list[int] = []
    n_bonds: list[int] = []
    reasons: list[str | None] = []
    no_ring, no_direction, no_dative = (
        chars.isdisjoint for chars in (_RING_OR_EXTENSION, _DIRECTION_OR_EXTENSION, _DATIVE_OR_EXTENSION)
    )
    with rdBase.BlockLogs():
        for text in smiles:
            mol, reason = _parse(text)
            reasons.append(reason)
            if mol is not None:
                _encode_into(
                    mol,
                    atoms,
                    bonds,
                    ends,
                    chiral="@" in text or "|" in text,
                    ringed=not no_ring(text),
                    stereo=not no_direction(text),
                    orders=no_dative(text),
                )
                n_atoms.append(mol.GetNumAtoms())
                n_bonds.append(mol.GetNumBonds())
    codes = CodeArrays(
        np.array(atoms, dtype=np.int32),
        np.array(bonds, dtype=np.uint8),
        np.array(ends, dtype=np.int32).reshape(-1, 2),
        np.array(n_atoms, dtype=np.int32),
        np.array(n_bonds, dtype=np.int32),
    )
    return codes, tuple(reasons)


class CodeArrays(NamedTuple):
    """Many molecules' codes, concatenated (the cache and shard format)."""

    atoms: np.ndarray
    """int32 ``[total_atoms]``."""
    bonds: np.ndarray
    """uint8 ``[total_bonds]``."""
    ends: np.ndarray
    """int32 ``[total_bonds, 2]``: per-molecule (local) atom indices."""
    num_atoms: np.ndarray
    """int32 ``[n]``."""
    num_bonds: np.ndarray
    """int32 ``[n]``."""


def concat_codes(codes: Iterable[MolCodes]) -> CodeArrays:
    """Concatenate molecules' codes into flat arrays (one ``join`` per array)."""
    atoms, bonds, ends, n_atoms, n_bonds = [], [], [], array("i"), array("i")
    for c in codes:
        atoms.append(c.atoms.tobytes())
        bonds.append(c.bonds.tobytes())
        ends.append(c.ends.tobytes())
        n_atoms.append(len(c.atoms))
        n_bonds.append(len(c.bonds))
    return CodeArrays(
        np.frombuffer(b"".join(atoms), dtype=np.int32).copy(),
        np.frombuffer(b"".join(bonds), dtype=np.uint8).copy(),
        np.frombuffer(b"".join(ends), dtype=np.int32).reshape(-1, 2).copy(),
        np.frombuffer(n_atoms.tobytes(), dtype=np.int32).copy(),
        np.frombuffer(n_bonds.tobytes(), dtype=np.int32).copy(),
    )


def _decode(codes: np.ndarray, blocks: tuple[tuple[str, int], ...], radices: tuple[int, ...]) -> np.ndarray:
    """Expand packed codes to float32 one-hot rows ``[len(codes), sum(widths)]`` (vectorized)."""
    width = sum(w for _, w in blocks)
    out = np.zeros((len(codes), width), dtype=np.float32)
    rows = np.arange(len(codes))
    rest = codes.astype(np.int64)
    offset = width
    for (_, w), radix in zip(reversed(blocks), reversed(radices), strict=True):
        rest, index = np.divmod(rest, radix)
        offset -= w
        if w == 1:
            out[:, offset] = index
        else:
            out[rows, offset + index] = 1.0
    return out


def decode_atoms(codes: np.ndarray) -> np.ndarray:
    """Atom codes -> float32 ``[n, ATOM_DIM]`` feature rows."""
    return _decode(codes, ATOM_BLOCKS, ATOM_RADICES)


def decode_bonds(codes: np.ndarray) -> np.ndarray:
    """Bond codes -> float32 ``[n, BOND_DIM]`` feature rows."""
    return _decode(codes, BOND_BLOCKS, BOND_RADICES)
