"""Chunk parts merged on the partner side give exactly the in-process library and shards (no Dask needed here)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from molfed.chem.standardize import StandardizeOptions
from molfed.data import dask_featurize as dk
from molfed.data.cache import featurize_library
from molfed.data.demo import BAD_ROWS, write_demo_partners
from molfed.data.library import file_digest
from molfed.data.shards import load_shard, write_shards
from molfed.errors import InputError


def library_with_edge_cases(out_dir: Path) -> Path:
    """The demo's largest partner (321 FreeSolv rows) plus every bad-row kind and duplicates of its first rows
    at the end (other chunks), one with a different label (merged), written the same way and differently."""
    alpha = write_demo_partners(out_dir / "demo", n_bad_rows=0)["alpha"]
    lines = alpha.read_text().splitlines()
    first, second = lines[1].split(",")[0], lines[2].split(",")[0]
    extra = [f'"{s}",{y}' for s, y, _ in BAD_ROWS] + [f"{first},9.5", f"{second},{lines[2].split(',')[1]}"]
    path = out_dir / "library.csv"
    path.write_text("\n".join(lines[:200] + [f"{first},-1.25"] + lines[200:] + extra) + "\n")
    return path


def spec_for(path: Path) -> dk.LibrarySpec:
    return dk.LibrarySpec(path, "smiles", ("expt",), ("regression",), StandardizeOptions())


def run_in_process(spec: dk.LibrarySpec, parts: Path, chunk_size: int) -> list[dk.ChunkResult]:
    return [dk.featurize_chunk(spec, c) for c in dk.plan_chunks(spec, parts, chunk_size)]


def assert_same_graphs(a, b) -> None:
    assert len(a) == len(b)
    for g, h in zip(a, b, strict=True):
        for name in ("x", "edge_index", "edge_attr", "y"):
            assert torch.equal(getattr(g, name), getattr(h, name)) or (
                name == "y" and torch.allclose(g.y, h.y, equal_nan=True) and torch.equal(g.y.isnan(), h.y.isnan())
            )


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return library_with_edge_cases(tmp_path_factory.mktemp("dask-parts"))


@pytest.mark.parametrize("duplicates", ["merge", "keep_first", "reject"])
def test_library_from_parts_equals_featurize_library(library: Path, tmp_path: Path, duplicates: str):
    spec = spec_for(library)
    results = run_in_process(spec, tmp_path / "parts", chunk_size=70)
    assert len(results) == 5 and sum(r.n_rows for r in results) == 329
    ws = tmp_path / "dask-ws"
    digest = file_digest(library)
    cache_file = dk.cache_file_for(spec, ws, digest=digest, duplicates=duplicates)
    dk.library_from_parts(spec, results, cache_file, digest=digest, duplicates=duplicates)
    kwargs = dict(smiles_column="smiles", label_columns=["expt"], task_types=["regression"])
    opts = dict(kwargs, standardize=StandardizeOptions(), duplicates=duplicates)
    via_parts = featurize_library(library, ws, **opts)  # finds the cache the parts made
    reference = featurize_library(library, tmp_path / "ref-ws", **opts)
    assert via_parts.cache_hit and not reference.cache_hit
    assert_same_graphs(via_parts.graphs, reference.graphs)
    assert via_parts.scaffolds == reference.scaffolds
    assert (via_parts.n_input_rows, via_parts.n_duplicates_merged) == (329, reference.n_duplicates_merged)
    assert via_parts.reject_counts == reference.reject_counts
    assert set(reference.reject_counts) >= {r for _, _, r in BAD_ROWS}
    assert (ws / "rejects.csv").read_bytes() == (tmp_path / "ref-ws" / "rejects.csv").read_bytes()
    if duplicates == "merge":
        assert reference.n_duplicates_merged == 3


def test_shards_from_parts_equal_write_shards(library: Path, tmp_path: Path):
    spec = spec_for(library)
    results = run_in_process(spec, tmp_path / "parts", chunk_size=70)
    ours = dk.shards_from_parts(spec, results, tmp_path / "ours")
    ref = write_shards(library, tmp_path / "ref", label_columns=["expt"], task_types=["regression"], chunk_size=70)
    assert (ours.n_molecules, ours.n_input_rows, ours.n_rejected) == (ref.n_molecules, ref.n_input_rows, ref.n_rejected)
    assert [p.name for p in ours.paths] == [p.name for p in ref.paths] and len(ref.paths) == 5
    for a, b in zip(ours.paths, ref.paths, strict=True):
        pa, pb = (torch.load(p, weights_only=True) for p in (a, b))
        assert pa.keys() == pb.keys() and pa["scaffolds"] == pb["scaffolds"]
        assert all(torch.equal(pa[k], pb[k]) for k in pa if k != "scaffolds")
        assert_same_graphs(load_shard(a), load_shard(b))
    assert (tmp_path / "ours" / "rejects.csv").read_bytes() == (tmp_path / "ref" / "rejects.csv").read_bytes()


def test_sdf_shard_rejects_name_the_molblock(tmp_path: Path):
    """For an SDF library a duplicate's reject names the structure column ("molblock"), as read_library does."""
    from rdkit import Chem

    path = tmp_path / "lib.sdf"
    with Chem.SDWriter(str(path)) as writer:
        for i, smiles in enumerate(["CCO", "c1ccccc1", "OCC"]):
            mol = Chem.MolFromSmiles(smiles)
            mol.SetProp("expt", str(-1.0 - i))
            writer.write(mol)
    spec = spec_for(path)
    shards = dk.shards_from_parts(spec, run_in_process(spec, tmp_path / "parts", chunk_size=2), tmp_path / "out")
    assert (shards.n_molecules, shards.n_rejected) == (2, 1)
    rows = (tmp_path / "out" / "rejects.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[:3] == ["3", "molblock", "duplicate"], rows


def test_altered_part_or_library_is_refused(library: Path, tmp_path: Path):
    spec = spec_for(library)
    results = run_in_process(spec, tmp_path / "parts", chunk_size=200)
    data = bytearray(results[1].part.read_bytes())
    data[-10] ^= 0xFF
    results[1].part.write_bytes(bytes(data))
    with pytest.raises(InputError, match="part changed"):
        dk.shards_from_parts(spec, results, tmp_path / "out")
    copy = tmp_path / "lib.csv"
    copy.write_bytes(library.read_bytes())
    chunk = dk.plan_chunks(spec_for(copy), tmp_path / "parts2", 200)[0]
    copy.write_text(copy.read_text() + "CCO,1\n")
    with pytest.raises(InputError, match="library file changed"):
        dk.featurize_chunk(spec_for(copy), chunk)


def test_part_strings_round_trip_exactly(tmp_path: Path):
    values = ["trailing NUL\x00", "", "é☃", "C1CC("]
    path = tmp_path / "t.npz"
    np.savez(path, **dk._text("t", values), **dk._text("none", []))
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert dk._strings(arrays, "t") == values and dk._strings(arrays, "none") == []
