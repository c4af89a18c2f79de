from pathlib import Path

import torch

from molfed.chem.standardize import StandardizeOptions
from molfed.data import cache as cache_mod
from molfed.data.cache import featurize_library

OPTS = dict(
    smiles_column="smiles",
    label_columns=["y"],
    task_types=["regression"],
    standardize=StandardizeOptions(),
    duplicates="merge",
    partner="p",
)


def _lib(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "lib.csv"
    path.write_text("smiles,y\n" + rows)
    return path


def test_second_run_loads_cache_without_featurizing(tmp_path, monkeypatch):
    path = _lib(tmp_path, "CCO,1.0\nc1ccccc1O,2.5\nC1CC(,3\n")
    first = featurize_library(path, tmp_path / "ws", **OPTS)
    assert not first.cache_hit and first.reject_counts == {"unparsable_smiles": 1}
    assert (tmp_path / "ws" / "rejects.csv").read_text().count("\n") == 2  # header + the reject

    def boom(*args, **kwargs):
        raise AssertionError("featurized again")

    monkeypatch.setattr(cache_mod, "read_library", boom)
    second = featurize_library(path, tmp_path / "ws", **OPTS)
    assert second.cache_hit and second.reject_counts == first.reject_counts
    assert second.scaffolds == first.scaffolds
    for a, b in zip(first.graphs, second.graphs, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.y, b.y)
        assert set(b.keys()) == {"x", "edge_index", "edge_attr", "y"}


def test_changed_library_or_options_refeaturize(tmp_path):
    path = _lib(tmp_path, "CCO,1.0\n")
    featurize_library(path, tmp_path / "ws", **OPTS)
    path.write_text("smiles,y\nCCO,1.0\nCCN,2.0\n")
    changed = featurize_library(path, tmp_path / "ws", **OPTS)
    assert not changed.cache_hit and len(changed.graphs) == 2
    other = featurize_library(path, tmp_path / "ws", **{**OPTS, "standardize": StandardizeOptions(neutralize=False)})
    assert not other.cache_hit


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = _lib(tmp_path, "CCO,1.0\n")
    featurize_library(path, tmp_path / "ws", **OPTS)
    for f in (tmp_path / "ws" / "cache").glob("*.pt"):
        f.write_bytes(b"garbage")
    again = featurize_library(path, tmp_path / "ws", **OPTS)
    assert not again.cache_hit and len(again.graphs) == 1
