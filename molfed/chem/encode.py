"""Molecules to compact integer codes: the RDKit half of featurization (no torch, cheap to run in worker processes).

Each atom becomes one ``int32`` code and each bond one ``uint8`` code: the mixed-radix packing of the
per-block category indices of the features documented in :mod:`molfed.chem.featurize` (e.g. an atom's
element index, degree, charge, ...). Codes are deterministic (the same in every process), 4 bytes per atom
and 9 bytes per bond including its two atom indices, so they are what caches and on-disk shards store;
:func:`molfed.chem.featurize.graphs_from_codes` expands them to one-hot tensors, vectorized.

Speed: many molecules go through RDKit's binary pickles (:func:`encode_mols`, :func:`encode_smiles`): one C++
call per molecule writes every feature, and :mod:`molfed.chem.pickles` decodes a whole batch with numpy, so no
Python code runs per atom or bond (per FreeSolv molecule ~20 µs to pickle and ~8 µs to decode, against ~80 µs for
RDKit's per-atom getters). :func:`encode_mol` reads one molecule through those getters, caching the code of each
distinct raw atom (bond) tuple per process; it is the reference the fast path is tested against and its fallback
for molecules the decoder does not cover.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdqueries

from molfed.chem.pickles import decode_pickles

__all__ = [
    "ATOM_BLOCKS",
    "BOND_BLOCKS",
    "CodeArrays",
    "MolCodes",
    "concat_codes",
    "decode_atoms",
    "decode_bonds",
    "encode_mol",
    "encode_mols",
    "encode_pickles",
    "encode_smiles",
    "split_codes",
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
_ST_INDEX: Final = {getattr(_BS, name): i for i, group in enumerate(BOND_STEREOS) for name in group}


def _radices(blocks: tuple[tuple[str, int], ...]) -> tuple[int, ...]:
    """Number of categories of each block: its width, or 2 for a flag."""
    return tuple(max(width, 2) for _, width in blocks)


ATOM_RADICES: Final = _radices(ATOM_BLOCKS)
BOND_RADICES: Final = _radices(BOND_BLOCKS)
assert int(np.prod(ATOM_RADICES)) < 2**31 and int(np.prod(BOND_RADICES)) < 2**8


def _pack(indices: Sequence[Any], radices: Sequence[int]) -> Any:
    """Mixed-radix packing of category indices: ints (one atom or bond), or int64 arrays (a batch, elementwise)."""
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
    indices = (
        _BT_INDEX.get(bond_type, len(BOND_TYPES)),
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
# Raw tuple -> code. Plain dicts: a race between threads computes the same value twice, harmlessly.
_ATOM_CODES: dict[tuple, int] = {}
_BOND_CODES: dict[tuple, int] = {}


def encode_mol(mol: Chem.Mol) -> MolCodes:
    """Encode a sanitized molecule (explicit H atoms become nodes) through RDKit's per-atom getters.

    For many molecules :func:`encode_mols` is several times faster (same codes).

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
    atom_codes, bond_codes = _ATOM_CODES, _BOND_CODES
    # One C++ query instead of an enum-returning getter per atom when no atom has a chiral tag (most molecules).
    chiral = len(mol.GetAtomsMatchingQuery(_HAS_CHIRAL_TAG)) > 0
    # Index access (not mol.GetAtoms()) avoids RDKit's pure-Python sequence wrapper.
    get_atom = mol.GetAtomWithIdx
    for idx in range(mol.GetNumAtoms()):
        atom = get_atom(idx)
        key = (
            atom.GetAtomicNum(),
            atom.GetDegree(),
            atom.GetFormalCharge(),
            atom.GetHybridization(),
            atom.GetIsAromatic(),
            atom.GetTotalNumHs(),
            atom.IsInRing(),
            atom.GetChiralTag() if chiral else _UNSPECIFIED,
        )
        try:
            atoms.append(atom_codes[key])
        except KeyError:
            atoms.append(atom_codes.setdefault(key, _atom_code(key)))
    get_bond = mol.GetBondWithIdx
    for idx in range(mol.GetNumBonds()):
        bond = get_bond(idx)
        ends.extend((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        bkey = (bond.GetBondType(), bond.GetIsConjugated(), bond.IsInRing(), bond.GetStereo())
        try:
            bonds.append(bond_codes[bkey])
        except KeyError:
            bonds.append(bond_codes.setdefault(bkey, _bond_code(bkey)))
    return MolCodes(array("i", atoms), array("B", bonds), array("i", ends))


def _table(index: dict, default: int) -> np.ndarray:
    """A 256-entry lookup from an enum's integer value (as pickles store it) to its category index."""
    table = np.full(256, default, dtype=np.int64)
    for key, value in index.items():
        table[int(key)] = value
    return table


_Z_TABLE: Final = _table(_Z_INDEX, len(ELEMENTS))
_HYB_TABLE: Final = _table(_HYB_INDEX, len(HYBRIDIZATIONS))
_CHI_TABLE: Final = _table(_CHI_INDEX, len(CHIRALITIES))
_BT_TABLE: Final = _table(_BT_INDEX, len(BOND_TYPES))
_ST_TABLE: Final = _table(_ST_INDEX, len(BOND_STEREOS))
_BATCH: Final = 4096  # molecules decoded at once: bounds the temporary arrays


def _encode_batch(blobs: Sequence[bytes]) -> list[CodeArrays]:
    """Codes of a batch of pickles as consecutive pieces: decoded runs vectorized, others via :func:`encode_mol`."""
    f = decode_pickles(blobs)
    atom_indices = (
        _Z_TABLE[f.atomic_num],
        np.minimum(f.degree, 5),
        2 + np.clip(f.formal_charge, -2, 2),
        _HYB_TABLE[f.hybridization],
        f.aromatic,
        np.minimum(f.total_hs, 4),
        f.atom_in_ring,
        _CHI_TABLE[f.chiral_tag],
    )
    bond_indices = (_BT_TABLE[f.bond_type], f.conjugated, f.bond_in_ring, _ST_TABLE[f.stereo])
    # int64 before packing: the decoded feature arrays are 8-bit and the codes would overflow them
    atoms = _pack([np.asarray(i, dtype=np.int64) for i in atom_indices], ATOM_RADICES).astype(np.int32)
    bonds = _pack([np.asarray(i, dtype=np.int64) for i in bond_indices], BOND_RADICES).astype(np.uint8)
    ends = f.ends.astype(np.int32)
    n_atoms, n_bonds = np.diff(f.atom_offsets).astype(np.int32), np.diff(f.bond_offsets).astype(np.int32)
    ao, bo = f.atom_offsets, f.bond_offsets
    pieces = []
    # Runs of molecules with the same fate, in order.
    bounds = [0, *(np.flatnonzero(np.diff(f.decoded.astype(np.int8))) + 1).tolist(), len(blobs)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if f.decoded[a]:
            pieces.append(
                CodeArrays(atoms[ao[a] : ao[b]], bonds[bo[a] : bo[b]], ends[bo[a] : bo[b]], n_atoms[a:b], n_bonds[a:b])
            )
        else:
            pieces.append(concat_codes(encode_mol(Chem.Mol(blob)) for blob in blobs[a:b]))  # type: ignore[call-overload]
    return pieces


def encode_pickles(blobs: Sequence[bytes]) -> CodeArrays:
    """Codes of many molecules given as ``Mol.ToBinary()`` pickles (:mod:`molfed.chem.pickles`, vectorized).

    The same codes as :func:`encode_mol` on each molecule; molecules the pickle decoder does not cover (rare shapes,
    another RDKit pickle version) go through :func:`encode_mol`.
    """
    pieces = [piece for i in range(0, len(blobs), _BATCH) for piece in _encode_batch(blobs[i : i + _BATCH])]
    if not pieces:
        return concat_codes(())
    if len(pieces) == 1:
        return pieces[0]
    return CodeArrays(*(np.concatenate(arrays) for arrays in zip(*pieces, strict=True)))


def encode_mols(mols: Iterable[Chem.Mol]) -> CodeArrays:
    """Codes of many sanitized molecules, concatenated (several times faster than :func:`encode_mol` on each)."""
    return encode_pickles([mol.ToBinary() for mol in mols])


def encode_smiles(smiles: Iterable[str]) -> tuple[CodeArrays, tuple[str | None, ...]]:
    """Parse (:func:`~molfed.chem.standardize.parse_smiles`, no standardization) and encode many SMILES.

    Each molecule is parsed and pickled (``Mol.ToBinary()``, one C++ call), with RDKit's logs blocked once for
    the batch; the pickles are then decoded together (:func:`encode_pickles`). The codes equal
    ``encode_mol(parse_smiles(s)[0])``'s (``tests/chem`` checks it on every demo molecule and on tricky ones).

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

    blobs: list[bytes] = []
    reasons: list[str | None] = []
    with rdBase.BlockLogs():
        for text in smiles:
            mol, reason = _parse(text)
            reasons.append(reason)
            if mol is not None:
                blobs.append(mol.ToBinary())
    return encode_pickles(blobs), tuple(reasons)


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


def split_codes(codes: CodeArrays) -> Iterator[MolCodes]:
    """One :class:`MolCodes` per molecule of concatenated codes (the inverse of :func:`concat_codes`)."""
    atoms = np.ascontiguousarray(codes.atoms, dtype=np.int32).tobytes()
    bonds = np.ascontiguousarray(codes.bonds, dtype=np.uint8).tobytes()
    ends = np.ascontiguousarray(codes.ends, dtype=np.int32).tobytes()
    a = b = 0
    for n_atoms, n_bonds in zip(codes.num_atoms.tolist(), codes.num_bonds.tolist(), strict=True):
        yield MolCodes(
            array("i", atoms[4 * a : 4 * (a + n_atoms)]),
            array("B", bonds[b : b + n_bonds]),
            array("i", ends[8 * b : 8 * (b + n_bonds)]),
        )
        a, b = a + n_atoms, b + n_bonds


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
