"""The fast featurizer against the straightforward one it replaced, on a few hundred molecules.

``reference_graph`` is the previous implementation's feature definitions written plainly (one Python one-hot row per
atom and bond); it lives here, not in the product. Every tensor must be identical, in value, order, dtype and shape.
"""

from __future__ import annotations

import pickle

import datamol as dm
import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from molfed.chem.encode import CodeArrays, concat_codes, encode_mol, encode_mols, encode_smiles
from molfed.chem.featurize import _graph, graphs_from_codes, mol_to_graph
from molfed.chem.pickles import decode_pickles
from molfed.chem.standardize import StandardizeOptions, parse_many, parse_smiles, standardize_mol

ELEMENTS = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I")
HYB = ("S", "SP", "SP2", "SP3", "SP3D", "SP3D2")
CHI = ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW")
BT = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
ST = {"STEREONONE": 0, "STEREOZ": 1, "STEREOCIS": 1, "STEREOE": 2, "STEREOTRANS": 2}


def one_hot(index: int, width: int) -> list[float]:
    return [1.0 if i == index else 0.0 for i in range(width)]


def reference_graph(mol: Chem.Mol, y=None) -> Data:
    rows = []
    for a in mol.GetAtoms():
        sym = a.GetSymbol()
        rows.append(
            one_hot(ELEMENTS.index(sym) if sym in ELEMENTS else 13, 14)
            + one_hot(min(a.GetDegree(), 5), 6)
            + one_hot(2 + max(-2, min(2, a.GetFormalCharge())), 5)
            + one_hot(HYB.index(str(a.GetHybridization())) if str(a.GetHybridization()) in HYB else 6, 7)
            + [float(a.GetIsAromatic())]
            + one_hot(min(a.GetTotalNumHs(), 4), 5)
            + [float(a.IsInRing())]
            + one_hot(CHI.index(str(a.GetChiralTag())) if str(a.GetChiralTag()) in CHI else 3, 4)
        )
    src, dst, feats = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bt = str(b.GetBondType())
        row = (
            one_hot(BT.index(bt) if bt in BT else 4, 5)
            + [float(b.GetIsConjugated()), float(b.IsInRing())]
            + one_hot(ST.get(str(b.GetStereo()), 3), 4)
        )
        src += [i, j]
        dst += [j, i]
        feats += [row, row]
    data = Data(
        x=torch.tensor(rows, dtype=torch.float32).reshape(-1, 43),
        edge_index=torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1),
        edge_attr=torch.tensor(feats, dtype=torch.float32).reshape(-1, 11),
    )
    if y is not None:
        data.y = torch.tensor(np.asarray(y, dtype=np.float32).reshape(1, -1))
    return data


EXTRA = [
    "C[C@](F)(Cl)C/C=C/[C@H](F)Cl",
    "F/C=C\\F",
    "N[C@@H](C)C(=O)O",
    "O=[N+]([O-])c1ccccc1",
    "[NH4+].[Cl-]",
    "FS(F)(F)(F)(F)F",
    "[O-2]",
    "C[Si](C)(C)OP(=O)(O)O",
    "[Se]1C=CC=C1",
    "[Na+].CC(=O)[O-]",
    "[2H]C([2H])([2H])O",
    "C->[Fe]",
    "[H]C([H])([H])[H]",
    "c1ccc2c(c1)[nH]c1ccccc12",
    "C1CC[C@H]2CCCC[C@@H]2C1",
    "[Cu+2].[O-]S(=O)(=O)[O-]",
    "CC(C)(C)[Sn](Cl)(Cl)Cl",
    # charges, zwitterions
    "C[N+](C)(C)CC(=O)[O-]",
    "[Fe+3]",
    "[C-]#[O+]",
    "CC#N",
    "[O-][n+]1ccccc1",
    # stereo: ring cis/trans, sulfoxide, allene, double bonds in and out of rings
    "C[C@H]1CC[C@@H](C)CC1",
    "C[S@@](=O)c1ccccc1",
    "CC=C=CC",
    "C/C=C/C=C\\C",
    "C1=C\\CCCCCC/1",
    # aromatic heteroatoms
    "c1cc[nH]c1",
    "c1ccoc1",
    "c1ccsc1",
    "c1cc[se]c1",
    "c1ccncc1",
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "B1=CC=CC=C1",
    "c1ccc2[nH]ccc2c1",
    # radicals
    "[CH3]",
    "[O]",
    "C[CH2]",
    "[N]=O",
    # metals, salts, dative bonds, hypervalence
    "[Na+].[Cl-]",
    "C[Mg]Br",
    "[Cl-].[Cl-].[Pt+2]",
    "N->[Pt](<-N)(Cl)Cl",
    "ClP(Cl)(Cl)(Cl)Cl",
    "CC(=O)O[Hg]",
    "[Li]CCCC",
    "O=[Cr](=O)(=O)=O",
    "c1ccc(cc1)[Si](c1ccccc1)(c1ccccc1)O",
    "OB(O)c1ccccc1",
    "[I-].C[N+](C)(C)C",
    "FC(F)(F)[As](F)F",
    # explicit hydrogens, isotopes
    "[2H]c1ccccc1[2H]",
    "[13CH3]O",
    "[H][H]",
    "[H]N([H])C(=O)N([H])[H]",
]


@pytest.fixture(scope="module")
def smiles() -> list[str]:
    return list(dm.data.freesolv()["smiles"]) + EXTRA  # all demo molecules (the demo partners are FreeSolv)


@pytest.fixture(scope="module")
def mols(smiles) -> list[Chem.Mol]:
    parsed = [parse_smiles(s)[0] for s in smiles]
    assert all(m is not None for m in parsed)
    return parsed


def assert_same(a: Data, b: Data, what: str) -> None:
    assert set(a.keys()) == set(b.keys()), what
    for key in sorted(a.keys()):
        ta, tb = a[key], b[key]
        assert ta.dtype == tb.dtype and ta.shape == tb.shape, (what, key)
        assert torch.equal(ta, tb) or (key == "y" and torch.equal(ta.isnan(), tb.isnan())), (what, key)


def test_fast_featurizer_equals_reference_raw_and_standardized(mols):
    assert len(mols) == 642 + len(EXTRA)
    options = StandardizeOptions()
    for i, mol in enumerate(mols):
        assert_same(mol_to_graph(mol, [float(i)]), reference_graph(mol, [float(i)]), Chem.MolToSmiles(mol))
        if i % 3 == 0 or i >= len(mols) - len(EXTRA):
            std = standardize_mol(mol, options)
            assert_same(mol_to_graph(std), reference_graph(std), Chem.MolToSmiles(std))


def test_tricky_molecules_cover_what_they_claim(mols):
    tricky = mols[-len(EXTRA) :]
    atoms = [a for m in tricky for a in m.GetAtoms()]
    bonds = [b for m in tricky for b in m.GetBonds()]
    assert any(a.GetNumRadicalElectrons() for a in atoms) and any(a.GetFormalCharge() >= 2 for a in atoms)
    assert any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in atoms)
    assert any(a.GetIsAromatic() and a.GetSymbol() in ("N", "O", "S", "Se", "B") for a in atoms)
    assert any(a.GetAtomicNum() in (3, 11, 12, 24, 26, 29, 33, 50, 78, 80) for a in atoms)  # metals, As
    assert any(a.GetAtomicNum() == 1 for a in atoms) and any(a.GetHybridization().name == "SP3D" for a in atoms)
    assert {b.GetBondType().name for b in bonds} >= {"SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "DATIVE"}


def test_bond_stereo_after_stereo_perception_equals_reference(mols):
    """parse_smiles leaves bond stereo unassigned; standardization or AssignStereochemistry sets E/Z."""
    seen = set()
    for mol in mols[-len(EXTRA) :]:
        mol = Chem.Mol(mol)
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
        seen |= {b.GetStereo().name for b in mol.GetBonds()}
        assert_same(mol_to_graph(mol), reference_graph(mol), Chem.MolToSmiles(mol))
    assert {"STEREOE", "STEREOZ"} <= seen


def test_encode_smiles_equals_parse_then_encode_and_reports_failures(smiles):
    # every demo and tricky molecule, failures, and texts with chiral tags, CXSMILES extensions, ring closures,
    # bond stereo, dative and quadruple bonds (encode_smiles decodes RDKit pickles; encode_mol calls getters)
    shortcuts = ["C[C@H](N)O", "[13CH3]C", "N[C@@H](C)C(=O)O |&1:1|", "C[C@H]1CC1", "C/C=C/C", "C%10CC%10"]
    shortcuts += ["F/C=C\\F", "C1CCC/C=C/CCC1", "CC=CC", "C=CC#N", "[NH3]->[Cu+2]", "[Cu+2]<-N", "[Mo]$[Mo]"]
    shortcuts += ["C/C=C/C |c:1|", "OC(=O)c1ccccc1", "C=C1CCC1=O"]
    texts = [*smiles, "C1CC(", "", "C(C)(C)(C)(C)C", "*CC", *shortcuts, " CCO ", "CC O"]
    codes, reasons = encode_smiles(texts)
    parsed = [parse_smiles(t) for t in texts]
    assert reasons == tuple(reason for _, reason in parsed)
    n = len(smiles)
    assert reasons[n : n + 4] == ("unparsable_smiles", "empty_smiles", "unsanitizable_smiles", "wildcard_atom")
    assert reasons[-1] == "unparsable_smiles" and reasons[-2] is None
    expected = concat_codes(encode_mol(m) for m, _ in parsed if m is not None)
    for name, a, b in zip(CodeArrays._fields, codes, expected, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert parse_many(texts) is not None and [r for _, r in parse_many(texts)] == list(reasons)


def test_pickle_path_equals_getters_on_raw_standardized_and_stereo_perceived(mols):
    options = StandardizeOptions()
    perceived = [Chem.Mol(m) for m in mols]
    for mol in perceived:
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    for what, batch in (
        ("raw", mols),
        ("standardized", [standardize_mol(m, options) for m in mols]),
        ("stereo perceived", perceived),
    ):
        fast = encode_mols(batch)
        expected = concat_codes(encode_mol(m) for m in batch)
        for name, a, b in zip(CodeArrays._fields, fast, expected, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), (what, name)
        # the fast path did the work (a format change would silently send everything to the getters)
        decoded = decode_pickles([m.ToBinary() for m in batch]).decoded
        assert decoded.mean() > 0.95, (what, decoded.mean())


def test_batch_featurization_equals_one_by_one(mols):
    labels = np.arange(2 * len(mols), dtype=np.float32).reshape(-1, 2)
    labels[3, 1] = np.nan
    graphs = graphs_from_codes(concat_codes(encode_mol(m) for m in mols), labels)
    assert len(graphs) == len(mols)
    for mol, y, g in zip(mols, labels, graphs, strict=True):
        assert_same(g, reference_graph(mol, y), Chem.MolToSmiles(mol))
    with pytest.raises(ValueError, match="shape"):
        graphs_from_codes(concat_codes(encode_mol(m) for m in mols[:2]), labels)


def test_fast_data_is_what_data_init_builds():
    x, ei, ea, y = torch.ones(2, 43), torch.tensor([[0, 1], [1, 0]]), torch.ones(2, 11), torch.zeros(1, 1)
    fast, slow = (
        _graph({"x": x, "edge_index": ei, "edge_attr": ea, "y": y}),
        Data(x=x, edge_index=ei, edge_attr=ea, y=y),
    )
    assert fast.__dict__.keys() == slow.__dict__.keys()
    assert fast._store.__dict__.keys() == slow._store.__dict__.keys()
    assert list(fast._store._mapping) == list(slow._store._mapping)
    assert fast._store._parent() is fast and fast.num_nodes == 2 and fast.num_edges == 2
    assert_same(pickle.loads(pickle.dumps(fast)), slow, "pickle")
    batch = Batch.from_data_list([fast, slow])
    assert batch.num_graphs == 2 and torch.equal(batch.batch, torch.tensor([0, 0, 1, 1]))
    fast.z = torch.zeros(2)  # still a normal Data afterwards
    assert "z" in fast


def test_rare_chiral_tags_take_the_per_atom_path():
    mol = Chem.MolFromSmiles("CC(O)N")
    mol.GetAtomWithIdx(1).SetChiralTag(Chem.ChiralType.CHI_OTHER)
    graph = mol_to_graph(mol)
    assert_same(graph, reference_graph(mol), "CHI_OTHER")
    assert graph.x[1, 42] == 1  # chirality block, "other"
