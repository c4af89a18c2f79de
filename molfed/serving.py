"""Predict with a trained model from SMILES (used by the MLflow pyfunc and ``molfed predict``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from torch_geometric.data import Batch

from molfed.chem.encode import encode_mols
from molfed.chem.featurize import graphs_from_codes
from molfed.chem.standardize import StandardizeOptions, parse_smiles, standardize_mol
from molfed.models.model import MoleculeModel


def predict_smiles(
    model: MoleculeModel, smiles: Sequence[str], *, standardize: StandardizeOptions, batch_size: int = 256
) -> pd.DataFrame:
    """Predictions ``[len(smiles), n_tasks]`` as a DataFrame with one column per task and a ``valid`` column.

    Unparsable SMILES (any :data:`~molfed.chem.standardize.PARSE_REASONS` reason, e.g. a non-ASCII character) and
    molecules standardization fails on get NaN predictions and ``valid = False``.
    """
    n_tasks = len(model.spec.task_names)
    preds = np.full((len(smiles), n_tasks), np.nan, dtype=np.float64)
    valid = np.zeros(len(smiles), dtype=bool)
    mols, index = [], []
    for i, s in enumerate(smiles):
        mol, _ = parse_smiles(s)
        if mol is None:
            continue
        try:
            mols.append(standardize_mol(mol, standardize))
        except ValueError:
            continue
        index.append(i)
    graphs = graphs_from_codes(encode_mols(mols))
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(graphs), batch_size):
        batch = Batch.from_data_list(graphs[start : start + batch_size]).to(device)
        out = model.predict(batch).cpu().numpy()
        rows = index[start : start + batch_size]
        preds[rows] = out
        valid[rows] = True
    frame = pd.DataFrame(preds, columns=list(model.spec.task_names))
    frame["valid"] = valid
    return frame
