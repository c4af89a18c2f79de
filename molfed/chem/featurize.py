"""Lean, fast atom/bond featurization of RDKit molecules into PyG graphs.

A graph is ``torch_geometric.data.Data`` with exactly these attributes (no SMILES,
nothing else, so graphs are safe to cache or pickle partner-side without carrying
structures in text form):

``x``
    float32 ``[num_atoms, ATOM_DIM]``
``edge_index``
    int64 ``[2, 2 * num_bonds]``; bond ``k`` gives edges ``2k`` (begin -> end) and
    ``2k + 1`` (end -> begin)
``edge_attr``
    float32 ``[2 * num_bonds, BOND_DIM]`` (both directions share the bond's features)
``y``
    float32 ``[1, n_tasks]``, NaN for a missing label; absent when no labels are given

Atom features (one-hot blocks, in this order; ``ATOM_DIM = 43``):

* atomic number: H, B, C, N, O, F, Si, P, S, Cl, Se, Br, I, other (14)
* degree (explicit neighbours): 0, 1, 2, 3, 4, 5 or more (6)
* formal charge, clipped to -2..+2 (5)
* hybridization: S, SP, SP2, SP3, SP3D, SP3D2, other (7)
* aromatic (1)
* total hydrogen count, clipped to 0..4 (5)
* in ring (1)
* chirality tag: none, CW, CCW, other (4)

Bond features (``BOND_DIM = 11``):

* type: single, double, triple, aromatic, other (5)
* conjugated (1)
* in ring (1)
* stereo: none, Z (or CIS), E (or TRANS), other (4)

Speed: the feature row of each distinct atom (bond) type -- the tuple of raw RDKit
values above -- is computed once per process and cached, so per molecule the work is
one pass of RDKit calls over atoms and bonds plus one ``numpy.take`` per tensor.

Change :data:`FEATURIZER_VERSION` whenever the meaning of a column changes; it is
part of :func:`featurizer_signature`, the cache key of featurized graphs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Data

__all__ = ["ATOM_DIM", "BOND_DIM", "FEATURIZER_VERSION", "featurizer_signature", "mol_to_graph"]

FEATURIZER_VERSION: Final = "1"

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

# (name, width) of each one-hot block; a width-1 block is a flag.
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
ATOM_DIM: Final = sum(width for _, width in ATOM_BLOCKS)
BOND_DIM: Final = sum(width for _, width in BOND_BLOCKS)


def _offsets(blocks: tuple[tuple[str, int], ...]) -> dict[str, int]:
    starts = np.cumsum([0] + [width for _, width in blocks[:-1]])
    return {name: int(start) for (name, _), start in zip(blocks, starts, strict=True)}


_A = _offsets(ATOM_BLOCKS)
_B = _offsets(BOND_BLOCKS)
_PT = Chem.GetPeriodicTable()
_Z_INDEX: Final = {_PT.GetAtomicNumber(symbol): i for i, symbol in enumerate(ELEMENTS)}
_HYB_INDEX: Final = {getattr(_HT, name): i for i, name in enumerate(HYBRIDIZATIONS)}
_CHI_INDEX: Final = {getattr(_CT, name): i for i, name in enumerate(CHIRALITIES)}
_BT_INDEX: Final = {getattr(_BT, name): i for i, name in enumerate(BOND_TYPES)}
_ST_INDEX: Final = {getattr(_BS, name): i for i, group in enumerate(BOND_STEREOS) for name in group}

# Raw RDKit values identifying an atom type / a bond type (the cache keys).
AtomKey = tuple[int, int, int, Chem.HybridizationType, bool, int, bool, Chem.ChiralType]
BondKey = tuple[Chem.BondType, bool, bool, Chem.BondStereo]


def _atom_row(key: AtomKey) -> np.ndarray:
    """The ``ATOM_DIM`` feature row of one atom type (the feature definitions live here)."""
    z, degree, charge, hybridization, aromatic, n_hs, in_ring, chirality = key
    row = np.zeros(ATOM_DIM, dtype=np.float32)
    row[_A["atomic_num"] + _Z_INDEX.get(z, len(ELEMENTS))] = 1
    row[_A["degree"] + min(degree, 5)] = 1
    row[_A["formal_charge"] + 2 + min(max(charge, -2), 2)] = 1
    row[_A["hybridization"] + _HYB_INDEX.get(hybridization, len(HYBRIDIZATIONS))] = 1
    row[_A["aromatic"]] = aromatic
    row[_A["total_hs"] + min(n_hs, 4)] = 1
    row[_A["in_ring"]] = in_ring
    row[_A["chirality"] + _CHI_INDEX.get(chirality, len(CHIRALITIES))] = 1
    return row


def _bond_row(key: BondKey) -> np.ndarray:
    """The ``BOND_DIM`` feature row of one bond type."""
    bond_type, conjugated, in_ring, stereo = key
    row = np.zeros(BOND_DIM, dtype=np.float32)
    row[_B["bond_type"] + _BT_INDEX.get(bond_type, len(BOND_TYPES))] = 1
    row[_B["conjugated"]] = conjugated
    row[_B["in_ring"]] = in_ring
    row[_B["stereo"] + _ST_INDEX.get(stereo, len(BOND_STEREOS))] = 1
    return row


class _RowCache:
    """Feature rows of the atom (or bond) types seen so far, in one growing table.

    Thread-safe for readers without locking: a row is written to the table before
    its index is published, and callers read :attr:`table` after their lookups.
    """

    def __init__(self, width: int, row_fn: Callable[[Any], np.ndarray]) -> None:
        self.index: dict[Hashable, int] = {}
        self.table = np.zeros((256, width), dtype=np.float32)
        self._row_fn = row_fn
        self._lock = threading.Lock()

    def add(self, key: Hashable) -> int:
        """Compute, store and return the row index of a new key."""
        with self._lock:
            if key in self.index:
                return self.index[key]
            row = len(self.index)
            if row == len(self.table):
                grown = np.zeros((2 * len(self.table), self.table.shape[1]), dtype=np.float32)
                grown[:row] = self.table
                self.table = grown
            self.table[row] = self._row_fn(key)
            self.index[key] = row
            return row


_ATOM_ROWS = _RowCache(ATOM_DIM, _atom_row)
_BOND_ROWS = _RowCache(BOND_DIM, _bond_row)


def featurizer_signature() -> str:
    """A stable identifier of the feature set, for cache keys of featurized graphs.

    Returns
    -------
    str
        ``"molfed-featurizer-v<version>-<16 hex digits>"``, the digits being a
        SHA-256 over the version and every feature list; it changes whenever a
        feature, its order or its width changes.
    """
    spec = {
        "version": FEATURIZER_VERSION,
        "elements": ELEMENTS,
        "hybridizations": HYBRIDIZATIONS,
        "chiralities": CHIRALITIES,
        "bond_types": BOND_TYPES,
        "bond_stereos": BOND_STEREOS,
        "atom_blocks": ATOM_BLOCKS,
        "bond_blocks": BOND_BLOCKS,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return f"molfed-featurizer-v{FEATURIZER_VERSION}-{digest}"


def mol_to_graph(mol: Chem.Mol, y: Sequence[float] | np.ndarray | None = None) -> Data:
    """Featurize a sanitized RDKit molecule into a PyG graph.

    Parameters
    ----------
    mol
        A sanitized molecule (hydrogens implicit or explicit; explicit H atoms
        become nodes).
    y
        Labels, one per task (1-D, NaN for missing), or ``None`` to leave ``y`` out.

    Returns
    -------
    Data
        ``x [num_atoms, ATOM_DIM]``, ``edge_index [2, 2 * num_bonds]``,
        ``edge_attr [2 * num_bonds, BOND_DIM]`` and, when ``y`` is given, ``y [1, n_tasks]``.
        A molecule without bonds gives ``edge_index [2, 0]`` and ``edge_attr [0, BOND_DIM]``.

    Raises
    ------
    ValueError
        If ``y`` is not one-dimensional.
    """
    # Index access (not mol.GetAtoms()) avoids RDKit's pure-Python sequence wrapper.
    atom_index = _ATOM_ROWS.index
    atom_rows: list[int] = []
    key: Hashable
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
            atom.GetChiralTag(),
        )
        row = atom_index.get(key)
        atom_rows.append(_ATOM_ROWS.add(key) if row is None else row)

    bond_index = _BOND_ROWS.index
    bond_rows: list[int] = []
    src: list[int] = []
    dst: list[int] = []
    get_bond = mol.GetBondWithIdx
    for idx in range(mol.GetNumBonds()):
        bond = get_bond(idx)
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        src += (i, j)
        dst += (j, i)
        key = (bond.GetBondType(), bond.GetIsConjugated(), bond.IsInRing(), bond.GetStereo())
        row = bond_index.get(key)
        row = _BOND_ROWS.add(key) if row is None else row
        bond_rows += (row, row)

    data = Data(
        x=torch.from_numpy(_ATOM_ROWS.table.take(atom_rows, axis=0)),
        edge_index=torch.from_numpy(np.array((src, dst), dtype=np.int64).reshape(2, -1)),
        edge_attr=torch.from_numpy(_BOND_ROWS.table.take(bond_rows, axis=0)),
    )
    if y is not None:
        labels = np.array(y, dtype=np.float32)
        if labels.ndim != 1:
            raise ValueError(f"y must be one-dimensional (one value per task); got shape {labels.shape}")
        data.y = torch.from_numpy(labels.reshape(1, -1))
    return data
