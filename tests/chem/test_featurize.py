"""Featurizer: shapes, hand-computed columns, no SMILES on graphs, labels, signature."""

import math

import numpy as np
import pytest
import torch
from rdkit import Chem

from molfed.chem import featurize
from molfed.chem.featurize import ATOM_DIM, BOND_DIM, featurizer_signature, mol_to_graph

# Column layout documented in the module docstring (absolute indices).
ELEM = {s: i for i, s in enumerate(["H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I"])}
Z_OTHER, DEG0, CHG0, HYB0, AROM, HS0, RING, CHI0 = 13, 14, 22, 25, 32, 33, 38, 39
SP, SP2, SP3 = HYB0 + 1, HYB0 + 2, HYB0 + 3
SINGLE, DOUBLE, TRIPLE, AROMATIC, BT_OTHER, CONJ, BRING, ST0 = 0, 1, 2, 3, 4, 5, 6, 7


def ones(row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(row).flatten().tolist())


def graph(smiles: str, y=None):
    return mol_to_graph(Chem.MolFromSmiles(smiles), y)


def test_dims_match_documented_layout():
    assert (ATOM_DIM, BOND_DIM) == (43, 11)


def test_ethanol_atoms_bonds_and_edges():
    g = graph("CCO")
    assert g.x.shape == (3, ATOM_DIM) and g.x.dtype == torch.float32
    assert g.edge_index.dtype == torch.int64
    assert g.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert ones(g.x[0]) == {ELEM["C"], DEG0 + 1, CHG0, SP3, HS0 + 3, CHI0}
    assert ones(g.x[1]) == {ELEM["C"], DEG0 + 2, CHG0, SP3, HS0 + 2, CHI0}
    assert ones(g.x[2]) == {ELEM["O"], DEG0 + 1, CHG0, SP3, HS0 + 1, CHI0}
    assert g.edge_attr.shape == (4, BOND_DIM) and g.edge_attr.dtype == torch.float32
    for row in g.edge_attr:
        assert ones(row) == {SINGLE, ST0}


def test_benzene_aromatic_bonds_in_both_directions():
    g = graph("c1ccccc1")
    assert g.x.shape == (6, ATOM_DIM)
    assert g.edge_index.shape == (2, 12)
    pairs = set(map(tuple, g.edge_index.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    assert len(pairs) == 12
    for row in g.edge_attr:
        assert ones(row) == {AROMATIC, CONJ, BRING, ST0}
    for row in g.x:
        assert ones(row) == {ELEM["C"], DEG0 + 2, CHG0, SP2, AROM, HS0 + 1, RING, CHI0}


def test_methane_has_no_edges():
    g = graph("C")
    assert g.x.shape == (1, ATOM_DIM)
    assert g.edge_index.shape == (2, 0) and g.edge_index.dtype == torch.int64
    assert g.edge_attr.shape == (0, BOND_DIM) and g.edge_attr.dtype == torch.float32
    assert ones(g.x[0]) == {ELEM["C"], DEG0, CHG0, SP3, HS0 + 4, CHI0}


def test_charged_atoms_and_clipping():
    quat = graph("C[N+](C)(C)C")
    assert ones(quat.x[1]) == {ELEM["N"], DEG0 + 4, CHG0 + 1, SP3, HS0, CHI0}
    acetate = graph("CC(=O)[O-]")
    assert CHG0 - 1 in ones(acetate.x[3])
    iron = graph("[Fe+3]")  # element outside the list, charge clipped to +2
    assert {Z_OTHER, DEG0, CHG0 + 2, HS0} <= ones(iron.x[0])


def test_stereo_and_chirality_columns():
    trans = graph("F/C=C/F")
    double = [i for i in range(trans.edge_attr.shape[0]) if trans.edge_attr[i, DOUBLE] == 1]
    assert len(double) == 2  # one bond, two directions
    assert all(ones(trans.edge_attr[i]) == {DOUBLE, ST0 + 2} for i in double)  # E
    cis = graph("F/C=C\\F")
    assert any(cis.edge_attr[i, ST0 + 1] == 1 for i in range(cis.edge_attr.shape[0]))  # Z
    chiral = graph("C[C@H](N)O")
    assert CHI0 + 2 in ones(chiral.x[1])  # @ is CHI_TETRAHEDRAL_CCW
    assert CHI0 + 1 in ones(graph("C[C@@H](N)O").x[1])
    assert ones(graph("C#N").edge_attr[0]) >= {TRIPLE}


def test_every_atom_row_has_one_hot_per_block():
    g = graph("CC(=O)Oc1ccccc1C(=O)O")  # aspirin
    # 6 categorical blocks always set; aromatic and in-ring flags add 0..2.
    per_row = g.x.sum(dim=1)
    assert torch.all((per_row >= 6) & (per_row <= 8))
    assert torch.all(g.edge_attr[:, :5].sum(dim=1) == 1)
    assert torch.all(g.edge_attr[:, 7:].sum(dim=1) == 1)


def test_matches_reference_implementation_on_varied_molecules():
    def reference(mol):
        rows = []
        for a in mol.GetAtoms():
            v = np.zeros(ATOM_DIM)
            sym = a.GetSymbol()
            v[ELEM.get(sym, Z_OTHER)] = 1
            v[DEG0 + min(a.GetDegree(), 5)] = 1
            v[CHG0 + max(-2, min(2, a.GetFormalCharge()))] = 1
            hyb = ["S", "SP", "SP2", "SP3", "SP3D", "SP3D2"]
            name = str(a.GetHybridization())
            v[HYB0 + (hyb.index(name) if name in hyb else 6)] = 1
            v[AROM] = a.GetIsAromatic()
            v[HS0 + min(a.GetTotalNumHs(), 4)] = 1
            v[RING] = a.IsInRing()
            chi = ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW"]
            tag = str(a.GetChiralTag())
            v[CHI0 + (chi.index(tag) if tag in chi else 3)] = 1
            rows.append(v)
        return np.array(rows, dtype=np.float32)

    smiles = [
        "CC(=O)Oc1ccccc1C(=O)O",
        "O=S(=O)(O)c1ccc(Br)cc1",
        "C[Si](C)(C)OP(=O)(O)O",
        "[Se]1C=CC=C1",
        "ClC(Cl)(Cl)I",
        "N#C[C@@H](F)B(O)O",
        "[NH4+]",
        "O=[N+]([O-])c1ccccc1",
        "FS(F)(F)(F)(F)F",  # degree 6 -> "5 or more", SP3D2
        "[O-2]",
    ]
    for smi in smiles:
        mol = Chem.MolFromSmiles(smi)
        np.testing.assert_array_equal(mol_to_graph(mol).x.numpy(), reference(mol), err_msg=smi)


def test_graph_has_only_the_documented_attributes():
    g = graph("CCO")
    assert set(g.keys()) == {"x", "edge_index", "edge_attr"}
    assert "smiles" not in g
    assert not hasattr(g, "smiles") or g.smiles is None
    assert set(graph("CCO", [1.0]).keys()) == {"x", "edge_index", "edge_attr", "y"}


def test_y_shape_and_nan_passthrough():
    g = graph("CCO", [1.5, float("nan"), -2.0])
    assert g.y.shape == (1, 3) and g.y.dtype == torch.float32
    assert g.y[0, 0].item() == 1.5 and math.isnan(g.y[0, 1].item()) and g.y[0, 2].item() == -2.0
    arr = graph("CCO", np.array([3.0], dtype=np.float64))
    assert arr.y.shape == (1, 1) and arr.y.dtype == torch.float32
    with pytest.raises(ValueError, match="one-dimensional"):
        graph("CCO", [[1.0, 2.0]])


def test_y_does_not_alias_caller_array():
    labels = np.array([1.0, 2.0], dtype=np.float32)
    g = graph("CCO", labels)
    labels[0] = 99.0
    assert g.y[0, 0].item() == 1.0


def test_featurizer_signature_is_stable_and_tracks_version(monkeypatch):
    sig = featurizer_signature()
    assert sig == featurizer_signature()
    assert sig.startswith("molfed-featurizer-v1-") and len(sig) == len("molfed-featurizer-v1-") + 16
    monkeypatch.setattr(featurize, "FEATURIZER_VERSION", "2")
    assert featurizer_signature() != sig
    monkeypatch.setattr(featurize, "FEATURIZER_VERSION", "1")
    monkeypatch.setattr(featurize, "ELEMENTS", featurize.ELEMENTS + ("Na",))
    assert featurizer_signature() != sig


def test_codes_are_the_same_under_threads():
    from concurrent.futures import ThreadPoolExecutor

    from molfed.chem import encode

    encode._ATOM_CODES.clear()
    encode._BOND_CODES.clear()
    mols = [Chem.MolFromSmiles(s) for s in ["CCO", "c1ccccc1O", "N#C[C@@H](F)B(O)O", "[NH4+]", "C/C=C/Cl"]] * 50
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(encode.encode_mol, mols))
    assert all(p == encode.encode_mol(m) for p, m in zip(parallel, mols, strict=True))


def test_graphs_do_not_share_memory_with_the_cache():
    a, b = graph("CCO"), graph("CCO")
    a.x[0, 0] = 5.0
    assert b.x[0, 0].item() == 0.0 and graph("CCO").x[0, 0].item() == 0.0
