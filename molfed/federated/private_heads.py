"""Shared trunk + private heads, partner side: a partner's model is the federation's model plus a head for the
tasks only it has (MELLODDY-style).

The partner's model (:func:`partner_model`) = the received trunk and shared head + the private head kept in the
partner's workspace between rounds (:mod:`molfed.federated.partner_state`, state ``private_head``) + target
scaling for private regression tasks computed from the partner's own training labels. What leaves the partner is
:func:`shared_weights` of it: the trunk, and the shared head if the partner has a shared task. The final model is
exported into the partner's workspace (:func:`export_model`, :func:`load_exported_model`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from pydantic import TypeAdapter
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfed.federated.conformal import Calibration
from molfed.federated.partner_state import load_saved, save_state
from molfed.federated.types import Weights, check_compatible
from molfed.federated.weights import get_weights, load_weights, save_weights, set_weights
from molfed.models.model import ModelSpec, MoleculeModel, build_model, is_private
from molfed.models.naming import SHARED_HEAD_PREFIX
from molfed.train.metrics import masked_loss, task_metrics

log = logging.getLogger(__name__)

STATE_NAME = "private_head"
"""Name of the partner-state file holding the private head."""
MODEL_FILE, META_FILE = "model.pt", "model.json"


@dataclass(frozen=True, slots=True)
class PrivateTask:
    """A task only this partner has."""

    name: str
    type: str
    column: str


@dataclass(frozen=True, slots=True)
class TaskLayout:
    """Which label columns a partner's graphs carry: ``y = [shared tasks (if has_shared)..., private tasks...]``."""

    n_shared: int
    """Shared tasks of the federation (columns of ``y`` when ``has_shared``)."""
    has_shared: bool = True
    """Whether ``y`` carries the shared columns (False: a partner with private tasks only; no shared head)."""
    private: tuple[PrivateTask, ...] = ()
    head_seed: int = 0
    """Seed of the private head's initial weights."""

    @property
    def shared_columns(self) -> list[int]:
        return list(range(self.n_shared)) if self.has_shared else []

    @property
    def private_columns(self) -> list[int]:
        start = self.n_shared if self.has_shared else 0
        return list(range(start, start + len(self.private)))


def shared_weights(weights: Weights) -> dict[str, np.ndarray]:
    """The tensors that may leave a partner: everything but the private head."""
    return {n: a for n, a in weights.items() if not is_private(n)}


def private_weights(weights: Weights) -> dict[str, np.ndarray]:
    return {n: a for n, a in weights.items() if is_private(n)}


def partner_spec(spec: ModelSpec, layout: TaskLayout) -> ModelSpec:
    """The federation's ``spec`` with this partner's private tasks (and without the shared head if it has none)."""
    names = (spec.task_names if layout.has_shared else ()) + tuple(t.name for t in layout.private)
    types = (spec.task_types if layout.has_shared else ()) + tuple(t.type for t in layout.private)
    return replace(spec, task_names=names, task_types=types, n_private_tasks=len(layout.private))


def private_scaling(graphs: Sequence[Data], layout: TaskLayout) -> dict[str, list[float]]:
    """Mean and std of private regression labels on ``graphs`` (the partner's training split); std 1 if undefined."""
    cols = layout.private_columns
    if not graphs:
        return {"mean": [0.0] * len(cols), "std": [1.0] * len(cols)}
    y = torch.cat([g.y for g in graphs]).double()[:, cols].numpy()
    mean, std = [], []
    for j in range(len(cols)):
        values = y[~np.isnan(y[:, j]), j]
        mean.append(float(values.mean()) if values.size else 0.0)
        std.append(float(values.std()) if values.size > 1 and values.std() > 1e-6 else 1.0)
    return {"mean": mean, "std": std}


def partner_model(
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    *,
    layout: TaskLayout,
    train: Sequence[Data],
    head: Weights | None,
    device: torch.device,
) -> MoleculeModel:
    """The federation's ``weights`` (trunk, and shared head if the partner has shared tasks) + the private ``head``
    (its seeded initial weights when None or not matching), with shared and private target scaling."""
    model = build_model(partner_spec(spec, layout), seed=layout.head_seed)
    own = private_scaling(train, layout)
    shared = ([*scaling["mean"]], [*scaling["std"]]) if layout.has_shared else ([], [])
    model.set_target_scaling(shared[0] + own["mean"], shared[1] + own["std"])
    current = get_weights(model)
    initial_head = private_weights(current)
    if head is not None and check_compatible(initial_head, head) is not None:
        log.warning(
            "saved private head does not match the model (%s): starting afresh", check_compatible(initial_head, head)
        )
        head = None
    received = {n: a for n, a in weights.items() if layout.has_shared or not n.startswith(SHARED_HEAD_PREFIX)}
    set_weights(model, {**received, **(head if head is not None else initial_head)})
    return model.to(device)


def load_head(workspace: Path, state_key: str, server_round: int | None) -> dict[str, np.ndarray] | None:
    """The private head to start round ``server_round`` from (None: none saved; latest with ``None``)."""
    return load_saved(workspace, state_key, STATE_NAME, server_round)


def save_head(workspace: Path, state_key: str, server_round: int, new: Weights, old: Weights) -> None:
    save_state(workspace, state_key, STATE_NAME, server_round, private_weights(new), private_weights(old))


@torch.no_grad()
def column_metrics(
    model: MoleculeModel, graphs: Sequence[Data], columns: Sequence[int], *, batch_size: int = 256
) -> dict[str, float]:
    """Masked loss (``loss``) and :func:`~molfed.train.metrics.task_metrics` of the model's output ``columns``
    against the same columns of ``y`` (``y`` may have more columns than the model has outputs, e.g. a partner's
    private ones after the shared ones); {} for no columns or no graphs."""
    if not columns or not graphs:
        return {}
    device = next(model.parameters()).device
    model.eval()
    outs, trues = [], []
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        outs.append(model.forward_batch(batch))
        trues.append(batch.y)
    cols = torch.as_tensor(list(columns), device=device)
    out_all, y_all = torch.cat(outs), torch.cat(trues)
    out, y = out_all[:, cols], y_all[:, cols]
    pred = model.to_predictions(out_all)[:, cols]
    cls = model.is_classification[cols]
    names = [model.spec.task_names[j] for j in columns]
    types = [model.spec.task_types[j] for j in columns]
    metrics = task_metrics(y.cpu().numpy(), pred.cpu().numpy(), types, names)
    scaled = torch.where(cls, y, (y - model.target_mean[cols]) / model.target_std[cols])
    metrics["loss"] = float(masked_loss(out, scaled, cls))
    return metrics


def export_model(directory: Path, model: MoleculeModel, *, meta: Mapping[str, object]) -> Path:
    """Write the partner's whole model (trunk + heads + target scaling) to ``directory``: ``model.pt`` (a tensor
    dict, ``torch.load(weights_only=True)``-safe) and ``model.json`` (spec, scaling and ``meta``)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(get_weights(model), str(directory / MODEL_FILE))
    info = {
        "spec": model.spec.to_dict(),
        "scaling": {"mean": model.target_mean.cpu().tolist(), "std": model.target_std.cpu().tolist()},
        **meta,
    }
    (directory / META_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return directory


def load_exported_model(directory: str | Path) -> tuple[MoleculeModel, dict[str, object]]:
    """Load a model written by :func:`export_model`; returns it (eval mode, CPU) and its ``model.json`` (its
    calibration, if any, as :func:`exported_calibration` reads it)."""
    directory = Path(directory)
    info = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    model = build_model(ModelSpec.from_dict(info["spec"]))
    model.set_target_scaling(info["scaling"]["mean"], info["scaling"]["std"])
    set_weights(model, load_weights(str(directory / MODEL_FILE)))
    return model.eval(), info


def exported_calibration(info: Mapping[str, object]) -> Calibration | None:
    """The calibration in an exported model's ``model.json`` (``info`` from :func:`load_exported_model`): the
    partner's own (:mod:`molfed.federated.own_calibration`), for ``predict_smiles(..., calibration=...)``; None if
    the model was exported uncalibrated.

    Raises
    ------
    ValueError
        If the entry is not a calibration (pydantic's ``ValidationError``).
    """
    entry = info.get("calibration")
    return None if entry is None else TypeAdapter(Calibration).validate_python(entry)
