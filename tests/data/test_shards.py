"""Streaming featurization to shards: same graphs as the in-memory path, bounded chunks, training from shards."""

from pathlib import Path

import pytest
import torch
from rdkit import Chem

from molfed.chem.encode import encode_mol
from molfed.chem.standardize import StandardizeOptions
from molfed.data.cache import featurize_library
from molfed.data.labels import Candidate
from molfed.data.library import Outcome, Reject
from molfed.data.shards import ShardChunk, load_shard, write_shard_chunks, write_shards
from molfed.errors import InputError
from molfed.federated import coordinator as coord
from molfed.models.model import build_model
from molfed.train.shards import train_from_shards

ROWS = "CCO,1.0\nc1ccccc1O,2.5\nC1CC(,3\nOCC,4.0\nCCN,5\nCC(=O)O,\nc1ccncc1,6\nCCCl,7\n"


def test_shards_hold_the_in_memory_graphs_in_row_order(tmp_path: Path):
    path = tmp_path / "lib.csv"
    path.write_text("smiles,y\n" + ROWS)
    shards = write_shards(path, tmp_path / "shards", label_columns=["y"], task_types=["regression"], chunk_size=3)
    assert len(shards.paths) == 3 and shards.n_input_rows == 8 and shards.n_rejected == 3
    reference = featurize_library(
        path,
        tmp_path / "ws",
        smiles_column="smiles",
        label_columns=["y"],
        task_types=["regression"],
        standardize=StandardizeOptions(),
        duplicates="keep_first",
    )
    streamed = [g for p in shards.paths for g in load_shard(p)]
    assert len(streamed) == len(reference.graphs) == shards.n_molecules == 5
    for a, b in zip(streamed, reference.graphs, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    report = (tmp_path / "shards" / "rejects.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in report[1:]] == ["unparsable_smiles", "duplicate", "missing_label"]

    spec = coord.model_spec(
        encoder="gine",
        hidden_channels=16,
        num_layers=1,
        dropout=0.0,
        readout="mean",
        head_layers=1,
        task_names=["y"],
        task_types=["regression"],
    )
    model = build_model(spec, seed=0)
    model.set_target_scaling([4.0], [2.0])
    before = [p.detach().clone() for p in model.parameters()]
    loss = train_from_shards(model, shards.paths, epochs=1, batch_size=2)
    assert loss > 0 and any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_missing_column_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "lib.csv"
    path.write_text("smiles,z\nCCO,1\n")
    with pytest.raises(InputError, match=r"missing column\(s\) \['y'\]"):
        write_shards(path, tmp_path / "s", label_columns=["y"], task_types=["regression"])


def test_shard_writer_numbers_shards_without_gaps_and_rejects_later_duplicates(tmp_path: Path):
    def kept(row: int, smiles: str, key: str) -> Outcome:
        mol = Chem.MolFromSmiles(smiles)
        return Candidate(row, mol, smiles, key, (float(row),)), (encode_mol(mol), "")

    chunks = [
        ShardChunk(2, [kept(2, "CCO", "K1"), (Reject(3, "missing_label", "y", "all labels empty"), None)]),
        ShardChunk(1, [kept(4, "OCC", "K1")]),  # only a duplicate: no shard
        ShardChunk(3, [kept(5, "CCN", ""), kept(6, "CCN", ""), kept(7, "CCCl", "")]),  # no InChIKey: keyed by SMILES
    ]
    shards = write_shard_chunks(iter(chunks), tmp_path / "s", n_tasks=1, structure_column="smi")
    assert [p.name for p in shards.paths] == ["shard-00000.pt", "shard-00001.pt"]
    assert (shards.n_molecules, shards.n_input_rows, shards.n_rejected) == (3, 6, 3)
    assert [g.y.item() for p in shards.paths for g in load_shard(p)] == [2.0, 5.0, 7.0]
    report = (tmp_path / "s" / "rejects.csv").read_text().splitlines()
    assert report == [
        "row,column,reason,detail",
        "3,y,missing_label,all labels empty",
        "4,smi,duplicate,same molecule as an earlier row",
        "6,smi,duplicate,same molecule as an earlier row",
    ]
