"""Partitioners: scaffold groups stay whole, Dirichlet label skew follows alpha, sizes follow fractions; files are
read by the normal pipeline; heterogeneity statistics on hand-computed cases."""

import numpy as np
import pytest

from molfed.data.library import read_library
from molfed.data.partition import (
    dirichlet_partition,
    heterogeneity_stats,
    label_classes,
    partition_dataset,
    read_partner_csv,
    scaffold_partition,
    size_partition,
    write_partners,
)

# scaffold in the comment; "" = acyclic
SMILES = [
    "Cc1ccccc1",  # c1ccccc1
    "Oc1ccccc1",  # c1ccccc1
    "Nc1ccccc1",  # c1ccccc1
    "CC1CCCCC1",  # C1CCCCC1
    "OC1CCCCC1",  # C1CCCCC1
    "Cc1ccncc1",  # c1ccncc1
    "Oc1ccncc1",  # c1ccncc1
    "C1CCOC1",  # C1CCOC1
    "c1ccc(Cc2ccccc2)cc1",  # c1ccc(Cc2ccccc2)cc1
    "CCO",
    "CCCC",
    "CCN",
    "CC(=O)O",
    "not a smiles",  # unparsable: dealt like an acyclic molecule
]
SCAFFOLDS = ["B", "B", "B", "H", "H", "P", "P", "T", "D", "", "", "", "", ""]


def _check_assignment(out, n, n_partners):
    assert out.dtype == np.int64 and out.shape == (n,)
    assert set(out.tolist()) == set(range(n_partners))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scaffold_partition_keeps_ring_scaffolds_whole_and_balances_sizes(seed):
    out = scaffold_partition(SMILES, 3, seed=seed)
    _check_assignment(out, len(SMILES), 3)
    for scaffold in set(SCAFFOLDS) - {""}:
        assert len({int(out[i]) for i, s in enumerate(SCAFFOLDS) if s == scaffold}) == 1, scaffold
    assert sorted(np.bincount(out).tolist()) == [4, 5, 5]
    np.testing.assert_array_equal(out, scaffold_partition(SMILES, 3, seed=seed))


def test_scaffold_partition_follows_fractions_and_seed_changes_the_split():
    out = scaffold_partition(SMILES, 2, seed=0, fractions=(0.75, 0.25))
    assert np.bincount(out).tolist() == [10, 4]
    splits = {tuple(scaffold_partition(SMILES, 3, seed=s).tolist()) for s in range(6)}
    assert len(splits) > 1
    with pytest.raises(ValueError, match="expected 2 positive numbers summing to 1"):
        scaffold_partition(SMILES, 2, fractions=(0.5, 0.6))
    with pytest.raises(ValueError, match="got n_partners=0"):
        scaffold_partition(SMILES, 0)


def test_label_classes_bin_regression_by_quantiles_and_keep_classes():
    np.testing.assert_array_equal(label_classes([4.0, 1.0, 3.0, 2.0, np.nan], n_bins=2), [1, 0, 1, 0, 2])
    np.testing.assert_array_equal(label_classes([1.0, 0.0, np.nan, 1.0], task="classification"), [1, 0, 2, 1])
    with pytest.raises(ValueError, match="got task 'ranking'"):
        label_classes([1.0], task="ranking")


def _label_spread(labels, out, n_partners):
    means = [labels[out == k].mean() for k in range(n_partners)]
    return max(means) - min(means)


def test_dirichlet_small_alpha_skews_labels_large_alpha_does_not():
    labels = np.random.default_rng(0).normal(size=600)
    skewed = dirichlet_partition(labels, 3, alpha=0.1, seed=0)
    mild = dirichlet_partition(labels, 3, alpha=1000.0, seed=0)
    _check_assignment(skewed, 600, 3)
    _check_assignment(mild, 600, 3)
    assert np.bincount(skewed).min() >= 10
    assert _label_spread(labels, skewed, 3) > 0.8 > 0.2 > _label_spread(labels, mild, 3)
    np.testing.assert_array_equal(skewed, dirichlet_partition(labels, 3, alpha=0.1, seed=0))
    assert not np.array_equal(skewed, dirichlet_partition(labels, 3, alpha=0.1, seed=1))


def test_dirichlet_classification_and_impossible_minimum():
    labels = np.array([0.0] * 50 + [1.0] * 50)
    out = dirichlet_partition(labels, 2, alpha=0.5, seed=3, task="classification", min_size=5)
    _check_assignment(out, 100, 2)
    with pytest.raises(ValueError, match="no draw in 5 gave every partner >= 60 molecules"):
        dirichlet_partition(labels, 2, alpha=0.5, min_size=60, max_tries=5)
    with pytest.raises(ValueError, match="got alpha=0"):
        dirichlet_partition(labels, 2, alpha=0)


def test_size_partition_sizes():
    out = size_partition(100, 3, seed=0, fractions=(0.6, 0.3, 0.1))
    assert np.bincount(out).tolist() == [60, 30, 10]
    drawn = size_partition(100, 4, seed=1, alpha=0.5, min_size=5)
    _check_assignment(drawn, 100, 4)
    assert np.bincount(drawn).min() >= 5
    np.testing.assert_array_equal(drawn, size_partition(100, 4, seed=1, alpha=0.5, min_size=5))


def test_written_partners_are_read_by_the_normal_pipeline(tmp_path):
    labels = [float(i) for i in range(len(SMILES))]
    labels[2] = float("nan")
    paths = partition_dataset(
        SMILES, labels, tmp_path, method="scaffold", n_partners=2, seed=0, label_column="logS", names=["a", "b"]
    )
    assert list(paths) == ["a", "b"]
    total, rejects = 0, {}
    for path in paths.values():
        assert path.read_text().splitlines()[0] == "smiles,logS"
        lib = read_library(path, label_columns=["logS"], task_types=["regression"])
        total += len(lib)
        for reason, count in lib.reject_counts().items():
            rejects[reason] = rejects.get(reason, 0) + count
    assert total == len(SMILES) - 2
    assert rejects == {"unparsable_smiles": 1, "missing_label": 1}
    again = partition_dataset(
        SMILES, labels, tmp_path / "again", method="scaffold", n_partners=2, seed=0, label_column="logS", names="ab"
    )
    assert [p.read_bytes() for p in again.values()] == [p.read_bytes() for p in paths.values()]


def test_write_partners_rules(tmp_path):
    paths = write_partners(tmp_path, ["CCO", "CCN"], [1.5, -2.0], [1, 0])
    assert paths["partner0"].read_text() == "smiles,y\nCCN,-2.0\n"
    assert paths["partner1"].read_text() == "smiles,y\nCCO,1.5\n"
    with pytest.raises(ValueError, match=r"partner\(s\) \['c'\] would get no molecules"):
        write_partners(tmp_path, ["CCO", "CCN"], [1.5, -2.0], [1, 0], names=["a", "b", "c"])
    with pytest.raises(ValueError, match="unknown partition method 'random'; choose from"):
        partition_dataset(["CCO"], [1.0], tmp_path, method="random", n_partners=1)


def test_heterogeneity_stats_by_hand(tmp_path):
    a = (["Cc1ccccc1", "CC1CCCCC1", "CCO"], [1.0, 2.0, 3.0])
    b = (["Oc1ccccc1", "Cc1ccncc1", "CCN"], [10.0, float("nan"), 20.0])
    stats = heterogeneity_stats({"a": a, "b": b})
    assert stats.labels["a"]["n"] == 3 and stats.labels["a"]["mean"] == 2.0
    assert stats.labels["a"]["std"] == pytest.approx(np.sqrt(2 / 3))
    assert stats.labels["a"]["q50"] == 2.0 and stats.labels["a"]["q25"] == 1.5
    assert stats.labels["b"]["n"] == 2 and stats.labels["b"]["mean"] == 15.0 and stats.labels["b"]["q90"] == 19.0
    assert stats.n_scaffolds == {"a": 2, "b": 2}
    assert stats.scaffold_jaccard == {("a", "b"): pytest.approx(1 / 3)}  # benzene shared of {benzene, C6, pyridine}
    paths = write_partners(tmp_path, a[0] + b[0], a[1] + b[1], [0, 0, 0, 1, 1, 1], names=["a", "b"])
    smiles, labels = read_partner_csv(paths["b"], "y")
    assert smiles == b[0] and labels[0] == 10.0 and np.isnan(labels[1])
