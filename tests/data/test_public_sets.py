"""Shipped benchmark sets: sizes, finite labels, classification labels derived at the stated threshold, no torch."""

import math
import subprocess
import sys

import pytest
from rdkit import Chem, rdBase

from molfed.data.public_sets import ACTIVE_PIC50, PUBLIC_SETS, SOLUBLE_LOG_S, load_public_set

SIZES = {"freesolv": 642, "solubility": 1282, "solubility_cls": 1282, "chembl2321810": 1017, "chembl2321810_cls": 1017}


@pytest.mark.parametrize("name", sorted(PUBLIC_SETS))
def test_set_has_its_size_finite_labels_and_parsable_smiles(name):
    s = load_public_set(name)
    assert s.name == name and len(s.smiles) == len(s.labels) == SIZES[name]
    assert all(math.isfinite(v) for v in s.labels)
    with rdBase.BlockLogs():
        assert sum(Chem.MolFromSmiles(smi) is None for smi in s.smiles) == 0
    if s.task_type == "classification":
        assert set(s.labels) == {0.0, 1.0}
    else:
        assert s.task_type == "regression" and len(set(s.labels)) > 100


@pytest.mark.parametrize(
    ("cls", "reg", "threshold"),
    [("solubility_cls", "solubility", SOLUBLE_LOG_S), ("chembl2321810_cls", "chembl2321810", ACTIVE_PIC50)],
)
def test_classification_labels_are_the_regression_label_at_the_threshold(cls, reg, threshold):
    c, r = load_public_set(cls), load_public_set(reg)
    assert c.smiles == r.smiles
    assert c.labels == tuple(float(v >= threshold) for v in r.labels)
    assert 0.2 < sum(c.labels) / len(c.labels) < 0.8  # both classes well represented


def test_chembl_series_joins_activity_on_the_id():
    s = load_public_set("chembl2321810")
    # first row of CHEMBL2321810.smi is id 1520012, whose activity is 5.48 in CHEMBL2321810_act.csv
    assert s.smiles[0] == "O=S(=O)(Nc1cccs1)c2ccc(Oc3ccccc3c4ccccc4)c(c2)C#N" and s.labels[0] == 5.48


def test_unknown_set_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown public set 'tox21'; choose from \['chembl2321810'"):
        load_public_set("tox21")


def test_loading_every_set_imports_no_torch():
    code = (
        "import sys\nfrom molfed.data.public_sets import PUBLIC_SETS, load_public_set\n"
        "[load_public_set(n) for n in PUBLIC_SETS]\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
