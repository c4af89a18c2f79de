"""Feature codes read from RDKit's binary molecule pickles, vectorized over a batch (the fast path of encoding).

Reading a feature through RDKit's Python API costs a Python call per atom and bond per feature (about 80 µs per
FreeSolv molecule for this feature set, more than parsing it). ``Mol.ToBinary()`` instead writes every feature
this package needs in one C++ call (about 20 µs): per atom its element, aromatic flag, formal charge, chiral tag,
hybridization and hydrogen counts; per bond its ends, type, conjugation and stereo; and the ring info. Here many
such pickles are decoded at once with numpy, one step per atom position (all molecules' first atoms, then their
second atoms, ...), so the Python work is per batch, not per atom.

The pickle format is RDKit's own (``Code/GraphMol/MolPickler.cpp``), versioned in its header. Only the version
this was written and tested against (:data:`SUPPORTED_VERSIONS`) and only the common shape of a parsed molecule
are decoded: at most 255 atoms, no query, atom-map, dummy-label or monomer data, and the ring info a sanitized
molecule carries. Every other molecule (and all of them under another pickle version) is reported as not decoded,
for the caller's per-atom RDKit path: the fast path only ever changes the speed, never the codes
(``tests/chem`` compares both on every test molecule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np
from rdkit import Chem

__all__ = ["SUPPORTED_VERSIONS", "PickleFeatures", "decode_pickles", "pickle_version", "supported"]

SUPPORTED_VERSIONS: Final = frozenset({(16, 4, 0)})
"""Pickle format versions (major, minor, patch) whose layout this module knows."""

_HEADER_LEN: Final = 20  # endian id, version tag, major, minor, patch: five int32
_BEGINATOM: Final = 0x01
_BEGINBOND: Final = 0x0B
_BEGINSYMMSSSR: Final = 0x42  # the ring info sanitization leaves (symmetrized SSSR)
_HAS_COORDS: Final = 0x80  # molecule flag byte; always set by the writer
_SP3: Final = int(Chem.HybridizationType.SP3)  # the hybridization a pickle leaves out
# Atom flag bits that add data this decoder does not read: coordinates (7), query (4), map number (3), dummy
# label (2), monomer info (1). Bond flag bits likewise: query (4), MDL end points (0).
_ATOM_EXTRA: Final = 0x9E
_BOND_EXTRA: Final = 0x91
_PAD: Final = 300  # > the most bytes one step reads past its position (a ring: size byte + 255 atoms)


def pickle_version(blob: bytes) -> tuple[int, int, int]:
    """The (major, minor, patch) format version in a pickle's header."""
    header = np.frombuffer(blob[:_HEADER_LEN], dtype="<i4")
    return int(header[2]), int(header[3]), int(header[4])


_HEADER: Final = Chem.MolFromSmiles("C").ToBinary()[:_HEADER_LEN]


def supported() -> bool:
    """Whether this RDKit writes a pickle version that :func:`decode_pickles` knows."""
    return pickle_version(_HEADER) in SUPPORTED_VERSIONS


class PickleFeatures(NamedTuple):
    """Raw features of a batch of molecules, concatenated; enums as their integer values.

    Molecule ``i`` owns atoms ``atom_offsets[i]:atom_offsets[i + 1]`` and bonds likewise; their values are
    meaningful only where ``decoded[i]``.
    """

    decoded: np.ndarray
    """bool ``[n]``: the molecule was read (else: use RDKit's getters)."""
    atom_offsets: np.ndarray
    """int64 ``[n + 1]``."""
    bond_offsets: np.ndarray
    """int64 ``[n + 1]``."""
    atomic_num: np.ndarray
    aromatic: np.ndarray
    formal_charge: np.ndarray
    chiral_tag: np.ndarray
    hybridization: np.ndarray
    total_hs: np.ndarray
    """Explicit plus implicit hydrogens (``GetTotalNumHs()``)."""
    degree: np.ndarray
    atom_in_ring: np.ndarray
    ends: np.ndarray
    """int64 ``[num_bonds, 2]``: begin and end atom, per-molecule indices."""
    bond_type: np.ndarray
    conjugated: np.ndarray
    bond_in_ring: np.ndarray
    stereo: np.ndarray


def _int32_at(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Little-endian int32 at each byte position (unaligned)."""
    b = buf[pos[:, None] + np.arange(4)].astype(np.int64)
    value = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24
    return np.where(value >= 2**31, value - 2**32, value)


def _steps(counts: np.ndarray):
    """For j = 0, 1, ...: (j, indices of the molecules with more than j items), largest counts first."""
    order = np.argsort(-counts, kind="stable")
    ascending = counts[order][::-1]
    n = len(counts)
    j = 0
    while True:
        active = n - int(np.searchsorted(ascending, j, side="right"))
        if active == 0:
            return
        yield j, order[:active]
        j += 1


def decode_pickles(blobs: Sequence[bytes]) -> PickleFeatures:
    """Decode the features of many ``Mol.ToBinary()`` pickles at once.

    Parameters
    ----------
    blobs
        Pickles of sanitized molecules.

    Returns
    -------
    PickleFeatures
        Per atom and bond, the raw values RDKit's getters would return (enums as their integer values);
        ``decoded`` marks the molecules read (all False when :func:`supported` is False).
    """
    n = len(blobs)
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    # Zero padding: a step reads at most _PAD bytes past a position, which is kept inside the data (a molecule found
    # not decodable is still walked, harmlessly, to the end of its counts).
    buf = np.frombuffer(b"".join(blobs) + bytes(_PAD), dtype=np.uint8)
    end = len(buf) - _PAD

    ok = (lengths > _HEADER_LEN + 10) & supported()
    safe = np.where(ok, starts, 0)
    header = np.frombuffer(_HEADER, dtype=np.uint8)
    ok &= (buf[safe[:, None] + np.arange(_HEADER_LEN)] == header).all(axis=1)
    n_atoms = _int32_at(buf, safe + 20)
    n_bonds = _int32_at(buf, safe + 24)
    ok &= (n_atoms >= 0) & (n_atoms <= 255) & (n_bonds >= 0) & (n_bonds <= lengths)  # atom indices are 1 byte
    ok &= (buf[safe + 28] == _HAS_COORDS) & (buf[safe + 29] == _BEGINATOM)
    n_atoms, n_bonds = np.where(ok, n_atoms, 0), np.where(ok, n_bonds, 0)
    atom_offsets = np.zeros(n + 1, dtype=np.int64)
    bond_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=atom_offsets[1:])
    np.cumsum(n_bonds, out=bond_offsets[1:])
    n_atoms_total, n_bonds_total = int(atom_offsets[-1]), int(bond_offsets[-1])

    # Atoms: element (1 byte), flags (1), property flags (int32), then one byte per set property bit 1..7
    # (charge, chiral tag, hybridization unless SP3, explicit Hs, explicit valence, implicit valence, radicals)
    # and 4 bytes of isotope for bit 8. Bit 0 (an old mass field) is never written.
    atomic_num = np.empty(n_atoms_total, dtype=np.uint8)
    flags = np.empty(n_atoms_total, dtype=np.uint8)
    charge = np.empty(n_atoms_total, dtype=np.int8)
    chiral = np.empty(n_atoms_total, dtype=np.uint8)
    hybridization = np.empty(n_atoms_total, dtype=np.uint8)
    total_hs = np.empty(n_atoms_total, dtype=np.uint8)
    pos = np.where(ok, starts + 30, 0)
    for j, act in _steps(n_atoms):
        p = np.minimum(pos[act], end)
        at = atom_offsets[act] + j
        f, props, props_hi = buf[p + 1], buf[p + 2], buf[p + 3]
        ok[act] &= ((f & _ATOM_EXTRA) == 0) & ((props & 1) == 0) & (props_hi <= 1) & (buf[p + 4] == 0)
        ok[act] &= buf[p + 5] == 0
        atomic_num[at], flags[at] = buf[p], f
        o = p + 6
        bit = (props >> 1) & 1
        charge[at] = np.where(bit, buf[o].view(np.int8), 0)
        o = o + bit
        bit = (props >> 2) & 1
        chiral[at] = np.where(bit, buf[o], 0)
        o = o + bit
        bit = (props >> 3) & 1
        hybridization[at] = np.where(bit, buf[o], _SP3)
        o = o + bit
        bit = (props >> 4) & 1
        explicit_hs = np.where(bit, buf[o], 0)
        o = o + bit + ((props >> 5) & 1)  # explicit valence: not a feature
        bit = (props >> 6) & 1
        implicit_hs = np.where(bit & ~(f >> 5) & 1, buf[o], 0)  # none when the atom's "no implicit" flag is set
        o = o + bit + ((props >> 7) & 1) + 4 * (props_hi & 1)
        total_hs[at] = explicit_hs + implicit_hs
        pos[act] = o
    ok &= buf[np.minimum(pos, end)] == _BEGINBOND

    # Bonds: begin and end atom (1 byte each), flags, then the type unless single (flag bit 3), the direction
    # (bit 2), and the stereo label with its stereo-atom count and atoms (bit 1).
    ends = np.empty((n_bonds_total, 2), dtype=np.int64)
    bond_type = np.empty(n_bonds_total, dtype=np.uint8)
    bond_flags = np.empty(n_bonds_total, dtype=np.uint8)
    stereo = np.empty(n_bonds_total, dtype=np.uint8)
    pos = pos + 1
    for j, act in _steps(n_bonds):
        p = np.minimum(pos[act], end)
        at = bond_offsets[act] + j
        ends[at, 0], ends[at, 1] = buf[p], buf[p + 1]
        f = buf[p + 2]
        ok[act] &= (f & _BOND_EXTRA) == 0
        bond_flags[at] = f
        o = p + 3
        bit = (f >> 3) & 1
        bond_type[at] = np.where(bit, buf[o], int(Chem.BondType.SINGLE))
        o = o + bit + ((f >> 2) & 1)
        bit = (f >> 1) & 1
        stereo[at] = np.where(bit, buf[o], 0)
        pos[act] = o + bit * (2 + buf[o + 1])
    pos = np.minimum(pos, end)
    ok &= buf[pos] == _BEGINSYMMSSSR

    # Rings: their number (int32), then each ring's size and its atoms in ring order. An atom is in a ring if it is
    # in any; a bond if its atoms are neighbours in one (every ring bond lies in some ring of the SSSR).
    n_rings = _int32_at(buf, pos + 1)
    ok &= (n_rings >= 0) & (n_rings <= n_bonds)
    n_rings = np.where(ok, n_rings, 0)
    atom_in_ring = np.zeros(n_atoms_total, dtype=bool)
    ring_pairs = []
    stride = n_atoms_total + 1
    pos = pos + 5
    for _, act in _steps(n_rings):
        p = np.minimum(pos[act], end)
        size = buf[p].astype(np.int64)
        first = np.repeat(p + 1, size)
        within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        local = buf[first + within].astype(np.int64)
        following = buf[first + (within + 1) % np.repeat(size, size)].astype(np.int64)
        outside = np.maximum(local, following) >= np.repeat(n_atoms[act], size)
        ok[act[np.repeat(np.arange(len(act)), size)[outside]]] = False
        base = np.repeat(atom_offsets[act], size)
        local, following = base + np.where(outside, 0, local), base + np.where(outside, 0, following)
        atom_in_ring[local] = True
        ring_pairs.append(np.minimum(local, following) * stride + np.maximum(local, following))
        pos[act] = p + 1 + size

    bond_mol = np.repeat(np.arange(n), n_bonds)
    outside = ends.max(axis=1) >= n_atoms[bond_mol]  # a bond end that is not one of its molecule's atoms
    ok[bond_mol[outside]] = False
    global_ends = np.where(outside[:, None], 0, ends) + atom_offsets[bond_mol][:, None]
    pair = global_ends.min(axis=1) * stride + global_ends.max(axis=1)
    bond_in_ring = np.isin(pair, np.concatenate(ring_pairs)) if ring_pairs else np.zeros(n_bonds_total, dtype=bool)
    degree = np.bincount(global_ends.ravel(), minlength=n_atoms_total)

    return PickleFeatures(
        decoded=ok,
        atom_offsets=atom_offsets,
        bond_offsets=bond_offsets,
        atomic_num=atomic_num,
        aromatic=(flags >> 6) & 1,
        formal_charge=charge,
        chiral_tag=chiral,
        hybridization=hybridization,
        total_hs=total_hs,
        degree=degree,
        atom_in_ring=atom_in_ring,
        ends=ends,
        bond_type=bond_type,
        conjugated=(bond_flags >> 5) & 1,
        bond_in_ring=bond_in_ring,
        stereo=stereo,
    )
