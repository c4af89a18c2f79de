"""Demo partners: files, sizes, determinism, scaffold separation and the deliberate bad rows."""

import csv
from pathlib import Path

import pytest
from rdkit import Chem, rdBase

from molfed.data.demo import BAD_ROWS, DEMO_PARTNERS, write_demo_partners
from molfed.data.library import read_library
from molfed.data.split import murcko_scaffold

REPO = Path(__file__).resolve().parents[2]

N_FREESOLV = 642


def rows_of(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_partners(tmp_path_factory.mktemp("demo"), seed=0)


def test_three_partner_files_and_readme(demo):
    assert list(demo) == list(DEMO_PARTNERS) == ["alpha", "beta", "gamma"]
    for name, path in demo.items():
        assert path.name == f"{name}.csv" and path.exists()
        assert rows_of(path)[0] == ["smiles", "expt"]
    readme = (demo["alpha"].parent / "README.md").read_text()
    assert "FreeSolv" in readme and "scaffold" in readme and "gamma.csv" in readme


def test_sizes_follow_fractions_and_sum_to_freesolv_plus_bad_rows(demo):
    sizes = {name: len(rows_of(path)) - 1 for name, path in demo.items()}
    assert sum(sizes.values()) == N_FREESOLV + 2
    assert sizes["alpha"] > sizes["beta"] > sizes["gamma"]
    assert abs(sizes["alpha"] - 0.5 * N_FREESOLV) <= 2
    assert abs(sizes["beta"] - 0.3 * N_FREESOLV) <= 2


def test_bad_rows_go_to_the_last_partner_and_are_rejected(demo):
    assert [tuple(r) for r in rows_of(demo["gamma"])[-2:]] == [(s, v) for s, v, _ in BAD_ROWS[:2]]
    lib = read_library(demo["gamma"], label_columns=["expt"], task_types=["regression"])
    assert lib.reject_counts() == {"non_numeric_label": 1, "unparsable_smiles": 1}
    for name in ("alpha", "beta"):
        clean = read_library(demo[name], label_columns=["expt"], task_types=["regression"])
        assert clean.rejects == () and len(clean) == len(rows_of(demo[name])) - 1


def test_ring_scaffolds_do_not_cross_partners_but_acyclics_are_spread(demo):
    scaffolds = {}
    with rdBase.BlockLogs():
        for name, path in demo.items():
            mols = [Chem.MolFromSmiles(r[0]) for r in rows_of(path)[1:]]
            scaffolds[name] = [murcko_scaffold(m) for m in mols if m is not None]
    ring = {name: set(s) - {""} for name, s in scaffolds.items()}
    assert not ring["alpha"] & ring["beta"]
    assert not ring["alpha"] & ring["gamma"]
    assert not ring["beta"] & ring["gamma"]
    assert all(s.count("") >= 20 for s in scaffolds.values())  # acyclics are not given to one partner
    assert all(len(s) - s.count("") >= 40 for s in scaffolds.values())  # and ring chemistry for everyone


def test_byte_identical_for_a_seed_and_different_for_another(tmp_path, demo):
    again = write_demo_partners(tmp_path / "again", seed=0)
    for name in DEMO_PARTNERS:
        assert again[name].read_bytes() == demo[name].read_bytes()
    assert (tmp_path / "again" / "README.md").read_bytes() == (demo["alpha"].parent / "README.md").read_bytes()
    other = write_demo_partners(tmp_path / "other", seed=1)
    assert other["alpha"].read_bytes() != demo["alpha"].read_bytes()


def test_bad_row_count_and_validation(tmp_path):
    none = write_demo_partners(tmp_path / "none", n_bad_rows=0)
    assert sum(len(rows_of(p)) - 1 for p in none.values()) == N_FREESOLV
    many = write_demo_partners(tmp_path / "many", n_bad_rows=7)
    tail = rows_of(many["gamma"])[-7:]
    assert [r[0] for r in tail] == [s for s, _, _ in BAD_ROWS + BAD_ROWS[:2]]
    with pytest.raises(ValueError, match="summing to"):
        write_demo_partners(tmp_path / "x", fractions=(0.5, 0.6))
    with pytest.raises(ValueError, match="n_bad_rows"):
        write_demo_partners(tmp_path / "x", n_bad_rows=-1)
    two = write_demo_partners(tmp_path / "two", fractions=(0.5, 0.5), n_bad_rows=0)
    assert list(two) == ["alpha", "beta"]


def test_partner_overrides_point_the_demo_config_at_the_files(tmp_path):
    from molfed.config import load_config
    from molfed.data.demo import partner_overrides

    paths = write_demo_partners(tmp_path / "data", n_bad_rows=0)
    config = load_config(REPO / "configs" / "demo.yaml", partner_overrides(paths, tmp_path / "ws"))
    assert [(p.name, p.path) for p in config.partners] == list(paths.items())
    assert [config.workspace_for(p) for p in config.partners] == [tmp_path / "ws" / name for name in paths]
