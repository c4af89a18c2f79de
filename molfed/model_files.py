"""A molfed model's data files — ``weights.pt`` and ``model.json`` — read as untrusted input, without MLflow.

A logged model (:meth:`molfed.tracking.Tracker.log_model`) keeps them at :data:`MODEL_FILES` inside its MLflow model
directory. Loading them runs nothing from the store: ``model.json`` is validated (:func:`parse_model_file`), the
weights are read with ``torch.load(weights_only=True)`` and the model is built by the *installed* molfed.

This module does not import MLflow (~2 s of imports here): ``molfed predict`` on a local model directory
(:func:`load_model_dir`) needs only torch, PyG and RDKit. :mod:`molfed.tracking` downloads the same two files from a
store and loads them through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from molfed.chem.featurize import ATOM_DIM, BOND_DIM
from molfed.chem.standardize import StandardizeOptions
from molfed.config import ModelConfig
from molfed.federated.conformal import Calibration
from molfed.federated.partner import materialize
from molfed.federated.weights import load_weights
from molfed.models.model import ModelSpec, MoleculeModel

MODEL_FILES = ("artifacts/weights.pt", "artifacts/model.json")
"""The only files of a logged molfed model that molfed reads, relative to the model's directory: data (weights loaded
with ``weights_only=True``, a validated JSON config), never ``python_model.pkl`` or ``code/``."""

TASK_TYPES = ("regression", "classification")


class _Scaling(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    mean: list[float]
    std: list[float]


class ModelFile(BaseModel):
    """A molfed model's ``model.json`` (see :meth:`molfed.tracking.Tracker.log_model`), read as untrusted input."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    spec: ModelSpec
    scaling: _Scaling
    """Regression target means and standard deviations, one per task."""
    standardize: StandardizeOptions
    calibration: Calibration | None = None
    """Conformal calibration and applicability domain (absent in models logged before issue 18, or uncalibrated)."""


def parse_model_file(text: str | bytes) -> ModelFile:
    """Validate a ``model.json`` from a model store (which others may be able to write).

    Types are checked strictly and unknown keys refused; the architecture must be one molfed's config allows
    (:class:`~molfed.config.ModelConfig`), built for the installed featurizer, with one task type and one
    scaling entry per task.

    Raises
    ------
    ValueError
        One line naming the first problem, e.g. ``model.json: spec.hidden_channels: Input should be ...``.
    """
    try:
        meta = ModelFile.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"model.json: {_first_error(exc)}") from None
    try:
        ModelConfig.model_validate(
            {k: getattr(meta.spec, k) for k in ModelConfig.model_fields if hasattr(meta.spec, k)}
        )
    except ValidationError as exc:
        raise ValueError(f"model.json: spec.{_first_error(exc)}") from None
    spec, n_tasks = meta.spec, len(meta.spec.task_names)
    if (spec.in_channels, spec.edge_dim) != (ATOM_DIM, BOND_DIM):
        problem = f"spec: got in/edge channels {spec.in_channels}/{spec.edge_dim}, expected {ATOM_DIM}/{BOND_DIM}"
    elif n_tasks == 0 or len(spec.task_types) != n_tasks:
        problem = f"spec: got {n_tasks} task names and {len(spec.task_types)} task types, expected as many, at least 1"
    elif unknown := sorted(set(spec.task_types) - set(TASK_TYPES)):
        problem = f"spec.task_types: got {unknown}, expected values from {list(TASK_TYPES)}"
    elif not 0 <= spec.n_private_tasks <= n_tasks:
        problem = f"spec.n_private_tasks: got {spec.n_private_tasks}, expected 0 to {n_tasks}"
    elif (len(meta.scaling.mean), len(meta.scaling.std)) != (n_tasks, n_tasks):
        problem = f"scaling: got {len(meta.scaling.mean)} means and {len(meta.scaling.std)} stds, expected {n_tasks}"
    else:
        problem = (calibration_problem(meta.calibration, spec) if meta.calibration is not None else None) or ""
        if not problem:
            return meta
    raise ValueError(f"model.json: {problem}")


def calibration_problem(cal: Calibration, spec: ModelSpec) -> str | None:
    """Why a ``model.json``'s calibration does not fit its model, or None."""
    n_levels = len(cal.levels)
    if cal.method not in ("federated", "mondrian"):
        return f"calibration.method: got {cal.method!r}, expected 'federated' or 'mondrian'"
    if not cal.levels or any(not 0.0 < a < 1.0 for a in cal.levels):
        return "calibration.levels: expected at least one level, each strictly between 0 and 1"
    if [(t.name, t.type) for t in cal.tasks] != list(zip(spec.task_names, spec.task_types, strict=True)):
        return "calibration.tasks: expected one entry per task of the spec, same names, types and order"
    for i, t in enumerate(cal.tasks):
        lengths = (len(t.half_widths),) if t.type == "regression" else (len(t.include_0_to), len(t.include_1_from))
        if any(n != n_levels for n in lengths) or (t.type == "classification" and not (t.temperature or 0) > 0):
            return f"calibration.tasks.{i}: expected {n_levels} values per level (and a positive temperature)"
        if any(w is not None and w < 0 for w in t.half_widths):
            return f"calibration.tasks.{i}.half_widths: expected non-negative values"
    d = cal.domain
    if d is not None:
        size = spec.hidden_channels
        if len(d.mean) != size or len(d.precision) != size or any(len(row) != size for row in d.precision):
            return f"calibration.domain: expected a mean of {size} and a {size}x{size} precision matrix"
        if not 0.0 < d.level < 1.0 or (d.threshold is not None and d.threshold < 0):
            return "calibration.domain: expected 0 < level < 1 and a non-negative threshold"
    return None


def _first_error(exc: ValidationError) -> str:
    """``loc: message (and N more)`` of a pydantic error, without the offending input value."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A molfed model built by the installed molfed, ready to predict from SMILES."""

    model: MoleculeModel
    """In eval mode, with its target scaling."""
    standardize: StandardizeOptions
    """How input molecules are standardized (as in training)."""
    calibration: Calibration | None
    """Conformal calibration and applicability domain, if the model was calibrated."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One column per task plus ``valid`` (and the calibrated columns) for ``frame``'s ``smiles`` column.

        Raises
        ------
        ValueError
            If ``frame`` has no ``smiles`` column.
        """
        from molfed.serving import predict_smiles

        if "smiles" not in frame.columns:
            raise ValueError(f"input needs a 'smiles' column; got columns {list(frame.columns)}")
        return predict_smiles(
            self.model, frame["smiles"].astype(str).tolist(), standardize=self.standardize, calibration=self.calibration
        )


def load_model_files(weights_path: Path, meta_path: Path) -> LoadedModel:
    """Build the model with the installed molfed from ``weights.pt`` (``weights_only``) and a validated
    ``model.json`` (:func:`parse_model_file`).

    Raises
    ------
    ValueError
        If ``model.json`` is not a valid molfed model config or the weights do not fit it.
    """
    return _build(parse_model_file(Path(meta_path).read_bytes()), weights_path)


def _build(meta: ModelFile, weights_path: Path) -> LoadedModel:
    model = materialize(meta.spec, load_weights(str(weights_path)), meta.scaling.model_dump())
    model.eval()
    return LoadedModel(model, meta.standardize, meta.calibration)


EXPORT_FILES = ("model.pt", "model.json")
"""A partner's own exported model (trunk + private head, :func:`molfed.federated.private_heads.export_model`):
weights and ``model.json`` at the top of ``<workspace>/models/<federation run>/``."""
EXPORT_ONLY_KEYS = frozenset({"partner", "federation_run", "metrics"})
"""Keys an exported model's ``model.json`` adds (who, which federation, its test metrics); nothing else extra."""


def load_model_dir(directory: Path) -> LoadedModel:
    """Load a molfed model from a local directory, reading only its data files: an MLflow model directory (e.g.
    ``mlflow artifacts download -u models:/name/1 -d DIR``: :data:`MODEL_FILES`) or a partner's exported model
    (:data:`EXPORT_FILES`, its own calibration included).

    Raises
    ------
    FileNotFoundError
        If neither layout's files are there.
    ValueError
        As :func:`load_model_files`.
    """
    exported = [Path(directory) / name for name in EXPORT_FILES]
    if all(path.is_file() for path in exported):
        return load_exported_dir(*exported)
    weights_path, meta_path = (Path(directory) / name for name in MODEL_FILES)
    for path in (weights_path, meta_path):
        if not path.is_file():
            raise FileNotFoundError(f"no {Path(*path.parts[-2:])} in {directory} (expected a molfed model directory)")
    return load_model_files(weights_path, meta_path)


def load_exported_dir(weights_path: Path, meta_path: Path) -> LoadedModel:
    """A partner's exported model: its ``model.json`` validated as a logged model's, once the keys only an export
    carries (:data:`EXPORT_ONLY_KEYS`) are set aside.

    Raises
    ------
    ValueError
        If ``model.json`` is not a JSON object, or as :func:`load_model_files`.
    """
    try:
        info = json.loads(Path(meta_path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model.json: not JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError("model.json: expected a JSON object")
    return _build(
        parse_model_file(json.dumps({k: v for k, v in info.items() if k not in EXPORT_ONLY_KEYS})), weights_path
    )
