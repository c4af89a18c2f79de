"""Scaffold split: scaffolds, disjointness, coverage, determinism, fractions, tiny inputs."""

import numpy as np
import pytest
from rdkit import Chem

from molfed.data.split import Split, murcko_scaffold, scaffold_split, split_by_scaffold

# 6 benzenes, 4 pyridines, 3 cyclohexanes, 2 thiophenes, 5 acyclic, 10 singleton ring systems.
SMILES = (
    ["c1ccccc1C", "c1ccccc1O", "c1ccccc1N", "c1ccccc1Cl", "c1ccccc1CC", "c1ccccc1C(=O)O"]
    + ["c1ccncc1C", "c1ccncc1O", "c1ccncc1N", "c1ccncc1Cl"]
    + ["C1CCCCC1O", "C1CCCCC1N", "C1CCCCC1C"]
    + ["c1ccsc1C", "c1ccsc1O"]
    + ["CCO", "CCN", "CCCC", "CC(=O)O", "CCCl"]
    + [
        "C1CC1",
        "C1CCC1",
        "C1CCCC1",
        "C1CCCCCC1",
        "c1ccc2ccccc2c1",
        "c1ccoc1",
        "c1cc[nH]c1",
        "C1CCNCC1",
        "C1CCOC1",
        "c1cncnc1",
    ]
)
MOLS = [Chem.MolFromSmiles(s) for s in SMILES]
SCAFFOLDS = [murcko_scaffold(m) for m in MOLS]


def parts(split: Split) -> list[np.ndarray]:
    return [split.train, split.val, split.test]


def test_murcko_scaffold():
    assert murcko_scaffold(Chem.MolFromSmiles("OCCc1ccccc1")) == "c1ccccc1"
    assert murcko_scaffold(Chem.MolFromSmiles("C[C@H](O)c1ccncc1")) == "c1ccncc1"
    assert murcko_scaffold(Chem.MolFromSmiles("CCO")) == ""


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_parts_cover_everything_once_and_share_no_scaffold(seed):
    split = scaffold_split(MOLS, fractions=(0.6, 0.2, 0.2), seed=seed)
    everything = np.concatenate(parts(split))
    assert sorted(everything.tolist()) == list(range(len(MOLS)))
    assert all(p.dtype == np.int64 for p in parts(split))
    scaffold_sets = [{SCAFFOLDS[i] for i in p} - {""} for p in parts(split)]  # acyclic molecules: no ring system
    assert not scaffold_sets[0] & scaffold_sets[1]
    assert not scaffold_sets[0] & scaffold_sets[2]
    assert not scaffold_sets[1] & scaffold_sets[2]
    assert all(len(p) > 0 for p in parts(split))
    assert len(split.train) >= len(split.val) and len(split.train) >= len(split.test)


def test_sizes_close_to_fractions():
    split = scaffold_split(MOLS, fractions=(0.6, 0.2, 0.2), seed=3)
    assert len(split.train) <= 0.6 * len(MOLS)  # train never overfills
    assert len(split.val) <= 0.2 * len(MOLS)


def test_big_groups_go_to_train_first():
    # val/test halves are 3 molecules: the 6 benzenes, 5 acyclics and 4 pyridines are "big" and fill train.
    split = scaffold_split(MOLS, fractions=(0.6, 0.2, 0.2), seed=0)
    train_scaffolds = {SCAFFOLDS[i] for i in split.train}
    assert {"c1ccccc1", "", "c1ccncc1"} <= train_scaffolds


def test_deterministic_per_seed_and_seed_matters():
    first = scaffold_split(MOLS, seed=5)
    again = scaffold_split(MOLS, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts(first), parts(again), strict=True))
    others = [scaffold_split(MOLS, seed=s) for s in range(6)]
    assert any(not np.array_equal(o.test, first.test) for o in others)


def test_split_by_scaffold_equals_scaffold_split():
    a = scaffold_split(MOLS, fractions=(0.5, 0.25, 0.25), seed=2)
    b = split_by_scaffold(SCAFFOLDS, fractions=(0.5, 0.25, 0.25), seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(parts(a), parts(b), strict=True))


@pytest.mark.parametrize(
    "fractions",
    [(0.5, 0.5, 0.5), (-0.1, 0.6, 0.5), (0.8, 0.2), (float("nan"), 0.5, 0.5), (0.8, 0.1, 0.1000011)],
)
def test_fraction_validation(fractions):
    with pytest.raises(ValueError, match=r"got fractions .* expected three non-negative numbers"):
        scaffold_split(MOLS, fractions=fractions)


def test_fractions_within_tolerance_accepted():
    split = scaffold_split(MOLS, fractions=(0.8, 0.1, 0.1000001))
    assert sum(len(p) for p in parts(split)) == len(MOLS)


def test_zero_fractions_leave_parts_empty():
    only_train = scaffold_split(MOLS, fractions=(1.0, 0.0, 0.0))
    assert len(only_train.train) == len(MOLS) and len(only_train.val) == len(only_train.test) == 0
    no_test = scaffold_split(MOLS, fractions=(0.8, 0.2, 0.0))
    assert len(no_test.test) == 0 and len(no_test.val) > 0


def test_tiny_inputs_still_fill_every_requested_part():
    five = [Chem.MolFromSmiles(s) for s in ["c1ccccc1O", "C1CCCCC1", "c1ccncc1", "C1CC1", "c1ccsc1"]]
    for seed in range(5):
        split = scaffold_split(five, seed=seed)
        assert all(len(p) >= 1 for p in parts(split)), seed
        assert sorted(np.concatenate(parts(split)).tolist()) == [0, 1, 2, 3, 4]


def test_degenerate_inputs_do_not_crash():
    empty = scaffold_split([])
    assert all(len(p) == 0 and p.dtype == np.int64 for p in parts(empty))
    one = scaffold_split([Chem.MolFromSmiles("CCO")])
    assert one.train.tolist() == [0]
    same = scaffold_split([Chem.MolFromSmiles(s) for s in ["CCO", "CCN", "CCC"]])  # three acyclic singletons
    assert sorted(np.concatenate(parts(same)).tolist()) == [0, 1, 2] and len(same.train) >= 1
    two = scaffold_split([Chem.MolFromSmiles(s) for s in ["CCO", "c1ccccc1"]])
    assert len(two.train) == 1 and len(two.val) + len(two.test) == 1


def test_acyclic_molecules_are_spread_not_one_group():
    # 60 acyclic molecules and one ring scaffold of 40: the acyclic ones must not land together in one part
    scaffolds = [""] * 60 + ["c1ccccc1"] * 40
    split = split_by_scaffold(scaffolds, fractions=(0.8, 0.1, 0.1), seed=0)
    acyclic_per_part = [sum(1 for i in part if i < 60) for part in (split.train, split.val, split.test)]
    assert acyclic_per_part[1] >= 5 and acyclic_per_part[2] >= 5 and acyclic_per_part[0] >= 30
    ring_parts = [bool(set(range(60, 100)) & set(part.tolist())) for part in (split.train, split.val, split.test)]
    assert sum(ring_parts) == 1  # the ring scaffold stays whole
