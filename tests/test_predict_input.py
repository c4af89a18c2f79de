"""``molfed predict`` input: a SMILES RDKit would silently read as another molecule gets no prediction.

The model here is a stub (one parameter, predicts 0 for every graph): what is tested is which rows reach it, and
that the CLI counts the others by reason and writes them, with their rows, next to the output.
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from molfed.chem.standardize import StandardizeOptions
from molfed.cli import main
from molfed.serving import predict_smiles

NON_ASCII = ["CCCCCC\u041e", "CCCCCC\u00e9", "\uff23CCCO", "CC\u200bCCO"]  # Cyrillic O, e-acute, full-width C, ZWSP


class StubModel(torch.nn.Module):
    """Predicts 0.0 for every graph it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = SimpleNamespace(task_names=("expt",))
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def predict(self, batch) -> torch.Tensor:
        return torch.zeros(batch.num_graphs, 1)


@pytest.mark.parametrize("smiles", NON_ASCII)
def test_non_ascii_smiles_gets_no_prediction(smiles):
    frame = predict_smiles(StubModel(), ["CCO", smiles, "\u00a0CCN\u00a0"], standardize=StandardizeOptions())
    assert frame["valid"].tolist() == [True, False, True]  # the non-breaking spaces around CCN are stripped


def test_cli_counts_invalid_rows_by_reason_and_writes_them(tmp_path, monkeypatch, capsys):
    stub = StubModel()
    model = SimpleNamespace(
        predict=lambda _ctx, df: predict_smiles(stub, df["smiles"].tolist(), standardize=StandardizeOptions())
    )
    monkeypatch.setattr("molfed.tracking.load_model", lambda uri, tracking_uri: model)
    inp = tmp_path / "in.csv"
    pd.DataFrame({"id": range(6), "smi": ["CCO", *NON_ASCII, "C1CC"]}).to_csv(inp, index=False)
    out = tmp_path / "preds.csv"
    code = main(
        ["predict", "--model", "models:/x/1", "--input", str(inp), "--smiles-column", "smi", "--output", str(out)]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    report = tmp_path / "preds.rejects.csv"
    assert stdout.strip() == (
        f"wrote 6 predictions (5 invalid SMILES: non_ascii_smiles 4, unparsable_smiles 1; rows in {report}) to {out}"
    )
    assert pd.read_csv(out)["valid"].tolist() == [True, False, False, False, False, False]
    with report.open(newline="", encoding="utf-8") as handle:
        rows = [(r["row"], r["column"], r["reason"]) for r in csv.DictReader(handle)]
    assert rows == [(str(i), "smi", "non_ascii_smiles") for i in (3, 4, 5, 6)] + [("7", "smi", "unparsable_smiles")]


def test_cli_predicts_on_one_torch_thread_and_restores_the_count(tmp_path, monkeypatch):
    seen: list[int] = []

    def predict(_ctx, df):
        seen.append(torch.get_num_threads())
        return predict_smiles(StubModel(), df["smiles"].tolist(), standardize=StandardizeOptions())

    monkeypatch.setattr("molfed.tracking.load_model", lambda uri, tracking_uri: SimpleNamespace(predict=predict))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    inp = tmp_path / "in.csv"
    inp.write_text("smiles\nCCO\n", encoding="utf-8")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        args = ["predict", "--model", "models:/x/1", "--input", str(inp), "--output", str(tmp_path / "o.csv")]
        assert main(args) == 0
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
