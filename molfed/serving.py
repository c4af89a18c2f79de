"""Predict with a trained model from SMILES (used by the MLflow pyfunc and ``molfed predict``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Batch

from molfed.chem.encode import encode_mols
from molfed.chem.featurize import graphs_from_codes
from molfed.chem.standardize import StandardizeOptions, parse_smiles, standardize_mol
from molfed.federated import conformal as cf
from molfed.models.model import MoleculeModel

SET_LABELS = {(False, False): "none", (True, False): "0", (False, True): "1", (True, True): "0|1"}
"""A binary task's conformal set as a cell: the classes it holds."""


def predict_smiles(
    model: MoleculeModel,
    smiles: Sequence[str],
    *,
    standardize: StandardizeOptions,
    batch_size: int = 256,
    calibration: cf.Calibration | None = None,
) -> pd.DataFrame:
    """Predictions ``[len(smiles), n_tasks]`` as a DataFrame with one column per task and a ``valid`` column.

    Unparsable SMILES (any :data:`~molfed.chem.standardize.PARSE_REASONS` reason, e.g. a non-ASCII character) and
    molecules standardization fails on get NaN predictions and ``valid = False``.

    With a ``calibration`` (:func:`calibration_columns`): per regression task and level ``<task>_lower_<pct>`` and
    ``<task>_upper_<pct>``; per classification task ``<task>_probability`` (temperature-scaled) and
    ``<task>_set_<pct>``; and ``domain_score`` and ``in_domain`` per molecule.
    """
    n_tasks = len(model.spec.task_names)
    raw = np.full((len(smiles), n_tasks), np.nan, dtype=np.float64)
    preds = np.full((len(smiles), n_tasks), np.nan, dtype=np.float64)
    width = model.spec.hidden_channels if calibration is not None else 0
    emb = np.full((len(smiles), width), np.nan, dtype=np.float64)
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
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = Batch.from_data_list(graphs[start : start + batch_size]).to(device)
            rows = index[start : start + batch_size]
            valid[rows] = True
            if calibration is None:  # the plain prediction needs no raw outputs or embeddings
                preds[rows] = model.predict(batch).cpu().numpy()
                continue
            h = model.embed(batch.x, batch.edge_index, batch.edge_attr, batch.batch)
            out = model.apply_heads(h)
            raw[rows] = out.cpu().numpy()
            preds[rows] = model.to_predictions(out).cpu().numpy()
            emb[rows] = h.cpu().numpy()
    frame = pd.DataFrame(preds, columns=list(model.spec.task_names))
    frame["valid"] = valid
    if calibration is not None:
        frame = pd.concat([frame, calibration_columns(raw, preds, emb, valid, calibration)], axis=1)
    return frame


def calibration_columns(
    raw: np.ndarray, preds: np.ndarray, emb: np.ndarray, valid: np.ndarray, calibration: cf.Calibration
) -> pd.DataFrame:
    """The calibrated columns for ``raw`` outputs, ``preds`` and embeddings ``emb`` (NaN / empty where invalid).

    Bounds are ±inf where the calibration set was too small for a level (fewer than ``1/(1-level) - 1`` labels)."""
    cols: dict[str, object] = {}
    for i, task in enumerate(calibration.tasks):
        if task.type == "regression":
            for level, (lo, hi) in zip(calibration.levels, cf.intervals(preds[:, i], task), strict=True):
                cols[f"{task.name}_lower_{cf.percent(level)}"] = lo
                cols[f"{task.name}_upper_{cf.percent(level)}"] = hi
        else:
            cols[f"{task.name}_probability"] = np.where(valid, cf.calibrated_probability(raw[:, i], task), np.nan)
            for level, (has0, has1) in zip(calibration.levels, cf.prediction_sets(raw[:, i], task), strict=True):
                cells = [
                    SET_LABELS[(bool(a), bool(b))] if ok else "" for a, b, ok in zip(has0, has1, valid, strict=True)
                ]
                cols[f"{task.name}_set_{cf.percent(level)}"] = cells
    if calibration.domain is not None:
        score = np.full(len(valid), np.nan)
        if valid.any():
            score[valid] = cf.domain_scores(emb[valid], calibration.domain.stats())
        threshold = calibration.domain.threshold
        cols["domain_score"] = score
        cols["in_domain"] = [
            bool(ok and (threshold is None or s <= threshold)) for s, ok in zip(score, valid, strict=True)
        ]
    return pd.DataFrame(cols)
