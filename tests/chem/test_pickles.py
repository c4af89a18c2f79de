"""The pickle decoder: which molecules it reads, which it leaves to RDKit's getters, and that bad bytes never crash it.

That its codes equal the getters' on every test molecule is checked in ``test_featurize_reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem

from molfed.chem import encode, pickles
from molfed.chem.encode import CodeArrays, concat_codes, encode_mol, encode_mols

DECODED = ["CCO", "c1ccccc1-c1ccccc1", "C/C=C/C", "N[C@@H](C)C(=O)O", "[13CH4]", "[Cu+2]<-N", "O=[N+]([O-])c1ccco1"]
DECODED += ["C1CC12CC2", "[Na+].[Cl-]", "[CH2]", "[H]C([H])([H])[H]", "C[C@H](F)Cl |&1:1|", "[Mo]$[Mo]"]


def left_to_getters() -> list[Chem.Mol]:
    """Molecules with data the decoder does not read: a dummy atom's label, an atom map, > 255 atoms, and ring
    info of another kind than sanitization leaves."""
    fast_rings = Chem.MolFromSmiles("C1CCC1C(=O)O", sanitize=False)
    fast_rings.UpdatePropertyCache()
    Chem.FastFindRings(fast_rings)
    texts = ["*C", "[CH3:7]C(=O)O", "C" * 300, "C1" + "C" * 280 + "1"]
    return [*(Chem.MolFromSmiles(t) for t in texts), fast_rings]


def assert_same(a: CodeArrays, b: CodeArrays) -> None:
    for name, x, y in zip(CodeArrays._fields, a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


def test_installed_rdkit_writes_a_supported_version():
    # Fails when an RDKit upgrade changes the pickle version: re-check the layout in MolPickler.cpp, then add it.
    assert pickles.supported()
    assert pickles.pickle_version(Chem.MolFromSmiles("CC").ToBinary()) in pickles.SUPPORTED_VERSIONS


def test_decoder_reads_common_molecules_and_leaves_the_rest_to_getters(monkeypatch):
    common = [Chem.MolFromSmiles(t) for t in DECODED]
    rare = left_to_getters()
    batch = [m for pair in zip(common, rare + common[: len(common) - len(rare)], strict=True) for m in pair]
    decoded = pickles.decode_pickles([m.ToBinary() for m in batch]).decoded
    assert decoded.tolist() == [not any(m is r for r in rare) for m in batch]
    expected = concat_codes(encode_mol(m) for m in batch)
    assert_same(encode_mols(batch), expected)
    monkeypatch.setattr(encode, "_BATCH", 3)  # runs of both kinds across batch ends
    assert_same(encode_mols(batch), expected)


def test_another_pickle_version_goes_to_getters(monkeypatch):
    batch = [Chem.MolFromSmiles(t) for t in DECODED]
    monkeypatch.setattr(pickles, "SUPPORTED_VERSIONS", frozenset())
    assert not pickles.decode_pickles([m.ToBinary() for m in batch]).decoded.any()
    assert_same(encode_mols(batch), concat_codes(encode_mol(m) for m in batch))


def test_empty_batch():
    assert_same(encode_mols([]), concat_codes([]))
    assert len(pickles.decode_pickles([]).decoded) == 0


BLOBS = [Chem.MolFromSmiles(t).ToBinary() for t in DECODED]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.integers(0, len(BLOBS) - 1), min_size=1, max_size=6),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_decoder_never_crashes_on_corrupt_bytes(picks, edits, cut):
    blobs = [bytearray(BLOBS[i]) for i in picks]
    for where, value in edits:
        blob = blobs[where % len(blobs)]
        blob[where % len(blob)] = value
    blobs[0] = blobs[0][: cut % (len(blobs[0]) + 1)]
    f = pickles.decode_pickles([bytes(b) for b in blobs])
    assert len(f.decoded) == len(blobs)
    assert len(f.atomic_num) == f.atom_offsets[-1] and len(f.ends) == f.bond_offsets[-1]
    assert (np.diff(f.atom_offsets) >= 0).all() and (np.diff(f.bond_offsets) >= 0).all()
    for blob, ok in zip(blobs, f.decoded, strict=True):
        if bytes(blob) in BLOBS:  # untouched pickles still decode
            assert ok


@pytest.mark.parametrize("text", DECODED)
def test_each_common_molecule_decodes_alone(text):
    mol = Chem.MolFromSmiles(text)
    assert pickles.decode_pickles([mol.ToBinary()]).decoded.all()
    assert_same(encode_mols([mol]), concat_codes([encode_mol(mol)]))
