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

For SMILES, ``graphs_from_codes(encode_smiles(smiles)[0])`` (:func:`~molfed.chem.encode.encode_smiles`) is
the fastest path from text to graphs.

Speed: RDKit's part (:func:`~molfed.chem.encode.encode_mols`, compact integer codes per atom and bond, read from
RDKit's binary pickles in batches) is separate from the tensor part (:func:`graphs_from_codes`), which expands the
codes of many molecules at once with numpy and slices the result into per-molecule views; so featurizing a library
costs one RDKit call per molecule, a few vectorized array operations per batch, and one small ``Data`` per molecule.

Change :data:`FEATURIZER_VERSION` whenever the meaning of a column changes; it is
part of :func:`featurizer_signature`, the cache key of featurized graphs.
"""

from __future__ import annotations

import gc
import hashlib
import json
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Data
from torch_geometric.data.storage import GlobalStorage

from molfed.chem.encode import (
    ATOM_BLOCKS,
    BOND_BLOCKS,
    BOND_STEREOS,
    BOND_TYPES,
    CHIRALITIES,
    ELEMENTS,
    HYBRIDIZATIONS,
    CodeArrays,
    concat_codes,
    decode_atoms,
    decode_bonds,
    encode_mol,
)

__all__ = [
    "ATOM_DIM",
    "BOND_DIM",
    "FEATURIZER_VERSION",
    "featurizer_signature",
    "graphs_from_codes",
    "mol_to_graph",
]

FEATURIZER_VERSION: Final = "1"
ATOM_DIM: Final = sum(width for _, width in ATOM_BLOCKS)
BOND_DIM: Final = sum(width for _, width in BOND_BLOCKS)


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


# What ``Data()`` puts in its ``__dict__`` besides ``_store`` (the feature/graph-store attribute classes).
_DATA_DICT: Final = {k: v for k, v in Data().__dict__.items() if k != "_store"}


def _graph(fields: dict[str, torch.Tensor]) -> Data:
    """``Data(**fields)`` without its per-attribute ``__setattr__`` machinery (~10x cheaper).

    Builds exactly the object state ``Data.__init__`` builds for tensor fields (``tests/chem`` compares the two,
    so a PyG change that breaks this fails there, not in training).
    """
    data = Data.__new__(Data)
    store = GlobalStorage.__new__(GlobalStorage)
    store.__dict__["_mapping"] = fields
    store.__dict__["_parent"] = weakref.ref(data)
    data.__dict__.update(_DATA_DICT)
    data.__dict__["_store"] = store
    return data


def graphs_from_codes(codes: CodeArrays, y: np.ndarray | None = None) -> tuple[Data, ...]:
    """Expand many molecules' codes into PyG graphs, vectorized over all of them.

    Parameters
    ----------
    codes
        Concatenated codes of ``n`` molecules (:func:`~molfed.chem.encode.concat_codes`).
    y
        float32 ``[n, n_tasks]`` labels (NaN for missing), or ``None`` to leave ``y`` out.

    Returns
    -------
    tuple of Data
        One graph per molecule, laid out as documented above. The tensors of all graphs are views into a few
        shared tensors (cheap to make and to collate; ``clone()`` one before serializing it on its own).

    Raises
    ------
    ValueError
        If ``y`` does not have one row per molecule.
    """
    n = len(codes.num_atoms)
    labels = None
    if y is not None:
        labels = np.asarray(y, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != n:
            raise ValueError(f"y must have shape [{n}, n_tasks]; got {labels.shape}")
    x = torch.from_numpy(decode_atoms(codes.atoms))
    # bond k -> edges 2k (begin -> end) and 2k + 1 (end -> begin), both with the bond's features
    edge_attr = torch.from_numpy(np.repeat(decode_bonds(codes.bonds), 2, axis=0))
    ends = codes.ends.astype(np.int64)
    edge_index = torch.from_numpy(np.stack([ends.reshape(-1), ends[:, ::-1].reshape(-1)]))
    n_edges = (2 * codes.num_bonds).tolist()
    with _collector_paused():
        xs = torch.split(x, codes.num_atoms.tolist())
        eis = torch.split(edge_index, n_edges, dim=1)
        eas = torch.split(edge_attr, n_edges)
        if labels is None:
            return tuple(
                _graph({"x": a, "edge_index": b, "edge_attr": c}) for a, b, c in zip(xs, eis, eas, strict=True)
            )
        ys = torch.from_numpy(labels).unsqueeze(1).unbind(0)  # [1, n_tasks] views
        return tuple(
            _graph({"x": a, "edge_index": b, "edge_attr": c, "y": d})
            for a, b, c, d in zip(xs, eis, eas, ys, strict=True)
        )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while thousands of graphs are made.

    Each batch of new objects triggers collections that rescan every tensor made so far: a cache hit of 8,000
    molecules took 0.70 s with the collector on and 0.14 s with it paused (bench/featurize.py).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def mol_to_graph(mol: Chem.Mol, y: Sequence[float] | np.ndarray | None = None) -> Data:
    """Featurize one sanitized RDKit molecule into a PyG graph.

    For many molecules, call :func:`graphs_from_codes` once on :func:`~molfed.chem.encode.encode_mols`'s codes.

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
    labels = None
    if y is not None:
        labels = np.array(y, dtype=np.float32)
        if labels.ndim != 1:
            raise ValueError(f"y must be one-dimensional (one value per task); got shape {labels.shape}")
        labels = labels.reshape(1, -1)
    return graphs_from_codes(concat_codes([encode_mol(mol)]), labels)[0]
