"""Streaming featurization to shards: same graphs as the in-memory path, bounded chunks, training from shards."""

from pathlib import Path

import pytest
import torch

from molfed.chem.standardize import StandardizeOptions
from molfed.data.cache import featurize_library
from molfed.data.shards import load_shard, train_from_shards, write_shards
from molfed.errors import InputError
from molfed.federated import coordinator as coord
from molfed.models.model import build_model

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
