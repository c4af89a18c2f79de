"""Partner-side work: prepare the library, train on it, evaluate on it. Runs inside the partner's walls.

Everything here touches private data; what it *returns* is only what may leave a partner: weights, counts,
digests and aggregate metrics (:class:`PartnerSummary`, :class:`~molfed.federated.types.Update`, metric dicts).
Prepared data is kept in this process (keyed by library digest and options) and on disk in the workspace.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from molfed.chem.standardize import StandardizeOptions
from molfed.data.cache import featurize_library
from molfed.data.split import split_by_scaffold
from molfed.errors import ConfigError
from molfed.federated import private_heads as ph
from molfed.federated.scaffold import start_control_step
from molfed.federated.types import (
    LOSS_BEFORE,
    PROXIMAL_MU,
    REPORT_LOSS_BEFORE,
    SCAFFOLD_C,
    SCAFFOLD_DELTA_C,
    Update,
    Weights,
)
from molfed.federated.weights import get_weights, set_weights
from molfed.models.model import ModelSpec, MoleculeModel, build_model, is_private
from molfed.privacy import DP_MAX_GRAD_NORM, DP_NOISE_MULTIPLIER, DP_NOISE_SEED
from molfed.privacy.dpsgd import dp_settings_from_options
from molfed.train.local import evaluate, label_moments, train_local
from molfed.train.schedule import lr_factor

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class PartnerSummary:
    """What a partner reports about its library: counts and a digest, no structures or labels."""

    name: str
    digest: str
    n_input_rows: int
    n_molecules: int
    n_train: int
    n_val: int
    n_test: int
    n_duplicates_merged: int
    reject_counts: dict[str, int] = field(default_factory=dict)
    cache_hit: bool = False


@dataclass(frozen=True, slots=True)
class PartnerData:
    """A partner's graphs split by scaffold. Never leaves the partner."""

    name: str
    splits: dict[str, tuple[Data, ...]]
    summary: PartnerSummary
    workspace: Path | None = None
    """Partner-private directory; strategy state that must persist between rounds (SCAFFOLD's ``c_i``, the private
    head) lives under ``<workspace>/federation_state/``."""
    layout: ph.TaskLayout | None = None
    """Label columns when the partner has private tasks or lacks shared ones (None: exactly the shared tasks)."""
    standardize: StandardizeOptions | None = None
    """Standardization the graphs were made with (stored with an exported model)."""

    @property
    def has_private(self) -> bool:
        return self.layout is not None and bool(self.layout.private)


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Local training hyperparameters (the same at every partner)."""

    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    """Across rounds (:mod:`molfed.train.schedule`); ``rounds`` is the schedule's length."""
    warmup_rounds: int = 0
    rounds: int = 1

    def lr_at(self, server_round: int) -> float:
        """The local learning rate of round ``server_round`` (1-based)."""
        return self.lr * lr_factor(self.lr_schedule, server_round, self.rounds, self.warmup_rounds)


_PREPARED: dict[tuple[object, ...], PartnerData] = {}
_LOCK = threading.Lock()


def prepare_partner(
    name: str,
    *,
    path: Path,
    workspace: Path,
    smiles_column: str,
    label_columns: Sequence[str | None],
    task_types: Sequence[str],
    standardize: StandardizeOptions,
    duplicates: str,
    split_fractions: tuple[float, float, float],
    seed: int,
    workers: int = 1,
    private_tasks: Sequence[ph.PrivateTask] = (),
    calibration_fraction: float = 0.0,
) -> PartnerData:
    """Featurize (or load from the workspace cache) and scaffold-split one partner's library.

    ``label_columns`` and ``task_types`` describe the federation's shared tasks; a column of None is a shared task
    this library lacks (its labels are missing). With ``private_tasks`` each graph's ``y`` is the shared columns
    (unless all are None) then the private ones (see :class:`~molfed.federated.private_heads.TaskLayout`).
    Results are memoized in this process by library digest and options, so the rounds of a federation reuse them.

    With ``calibration_fraction > 0`` a ``cal`` split is carved out of the training split for conformal calibration
    only: whole scaffold groups (:func:`carve_calibration`, seeded by ``seed`` and the partner's name), so the
    calibration molecules are as unlike the training molecules as the test molecules are. Training, target scaling
    and the baselines then use the rest of the training split.
    """
    present = [(c, t) for c, t in zip(label_columns, task_types, strict=True) if c is not None]
    present += [(t.column, t.type) for t in private_tasks]
    fl = featurize_library(
        Path(path),
        Path(workspace),
        smiles_column=smiles_column,
        label_columns=[c for c, _ in present],
        task_types=[t for _, t in present],
        standardize=standardize,
        duplicates=duplicates,
        partner=name,
        workers=workers,
    )
    key = (
        name,
        fl.digest,
        str(workspace),
        tuple(label_columns),
        tuple(task_types),
        standardize,
        duplicates,
        split_fractions,
        seed,
        tuple(private_tasks),
        calibration_fraction,
    )
    with _LOCK:
        if key in _PREPARED:
            return _PREPARED[key]
    layout = None
    if private_tasks or None in label_columns:
        has_shared = any(c is not None for c in label_columns)
        head_seed = derive_seed(seed, "private-head", name)
        layout = ph.TaskLayout(len(label_columns), has_shared, tuple(private_tasks), head_seed)
    graphs = _with_missing_columns(fl.graphs, label_columns) if layout and layout.has_shared else fl.graphs
    split = split_by_scaffold(fl.scaffolds, fractions=split_fractions, seed=seed)
    parts = {s: tuple(graphs[i] for i in getattr(split, s)) for s in SPLITS}
    if calibration_fraction > 0:
        keep, cal = carve_calibration(
            [fl.scaffolds[i] for i in split.train], calibration_fraction, derive_seed(seed, "calibration", name)
        )
        parts["cal"] = tuple(parts["train"][i] for i in cal)
        parts["train"] = tuple(parts["train"][i] for i in keep)
    summary = PartnerSummary(
        name=name,
        digest=fl.digest,
        n_input_rows=fl.n_input_rows,
        n_molecules=len(fl.graphs),
        n_train=len(parts["train"]),
        n_val=len(parts["val"]),
        n_test=len(parts["test"]),
        n_duplicates_merged=fl.n_duplicates_merged,
        reject_counts=fl.reject_counts,
        cache_hit=fl.cache_hit,
    )
    data = PartnerData(name, parts, summary, Path(workspace), layout, standardize)
    with _LOCK:
        _PREPARED[key] = data
    log.info("partner %s: %d molecules (%d rejected)", name, summary.n_molecules, sum(fl.reject_counts.values()))
    return data


def carve_calibration(scaffolds: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, calibration)`` of a training split, whole scaffold groups (each acyclic molecule its own)
    moved to calibration in seeded-random order while they fit ``fraction`` of the molecules.

    Groups larger than what is left of the target stay in training, so a partner's dominant chemotype is never
    moved out of training wholesale (a balanced split's "does not fit training, goes to the small part" rule would
    do exactly that when one scaffold holds most of a library)."""
    groups: dict[str, list[int]] = {}
    for index, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold or f"acyclic:{index}", []).append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    target, taken = fraction * len(scaffolds), list[int]()
    for group in order:
        if len(taken) + len(group) <= target:
            taken += group
    calibration = np.array(sorted(taken), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(scaffolds), dtype=np.int64), calibration)
    return train, calibration


def _with_missing_columns(graphs: Sequence[Data], label_columns: Sequence[str | None]) -> tuple[Data, ...]:
    """Graphs whose ``y`` has a NaN column for each shared task the library lacks (None in ``label_columns``)."""
    if None not in label_columns:
        return tuple(graphs)
    order = torch.tensor([i for i, c in enumerate(label_columns) if c is not None], dtype=torch.long)
    out = []
    for g in graphs:
        y = torch.full((g.y.shape[0], g.y.shape[1] + label_columns.count(None)), float("nan"), dtype=g.y.dtype)
        y[:, order] = g.y[:, : len(order)]
        y[:, len(label_columns) :] = g.y[:, len(order) :]
        out.append(Data(x=g.x, edge_index=g.edge_index, edge_attr=g.edge_attr, y=y))
    return tuple(out)


def derive_seed(seed: int, *parts: object) -> int:
    """A reproducible 31-bit seed for (seed, round, partner, ...), independent of Python's hash salt."""
    text = ":".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU.

    Raises
    ------
    ValueError
        If ``cuda`` is requested but not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: got 'cuda', but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(device)


def check_local_device(device: str) -> None:
    """Refuse a local-mode ``device`` this machine lacks, before a run starts (the partners train here).

    Raises
    ------
    ConfigError
        If ``cuda`` is requested but not available.
    """
    try:
        resolve_device(device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def materialize(
    spec: ModelSpec, weights: Weights, scaling: Mapping[str, Sequence[float]], device: str = "cpu"
) -> MoleculeModel:
    """Build a model from its spec, federation-wide target scaling and weights."""
    model = build_model(spec)
    model.set_target_scaling(scaling["mean"], scaling["std"])
    set_weights(model, weights)
    return model.to(resolve_device(device))


FIT_OPTIONS = (PROXIMAL_MU, REPORT_LOSS_BEFORE, DP_NOISE_MULTIPLIER, DP_MAX_GRAD_NORM, DP_NOISE_SEED)
"""``fit_options`` keys :func:`local_update` understands."""
FIT_TENSORS = (SCAFFOLD_C,)
"""``fit_tensors`` keys :func:`local_update` understands."""


def local_update(
    data: PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    settings: TrainSettings,
    seed: int,
    proximal_mu: float = 0.0,
    device: str = "cpu",
    fit_options: Mapping[str, float] | None = None,
    fit_tensors: Mapping[str, Weights] | None = None,
    server_round: int = 0,
    state_key: str = "default",
    workspace: Path | None = None,
) -> Update:
    """Train the global model on this partner's training split; return only the new weights and aggregates.

    Parameters
    ----------
    fit_options:
        The strategy's :meth:`~molfed.federated.strategy_base.Strategy.fit_options`: ``proximal_mu`` (FedProx;
        overrides the ``proximal_mu`` argument), ``report_loss_before`` (q-FedAvg: 1.0 adds
        ``metrics["loss_before"]``, the received model's loss on the training split), ``dp_*`` (sample-level
        DP-SGD, see :mod:`molfed.privacy.dpsgd`).
    fit_tensors:
        The strategy's :meth:`~molfed.federated.strategy_base.Strategy.fit_tensors`: ``scaffold_c`` (SCAFFOLD's
        server control variate): see :mod:`molfed.federated.scaffold`; returns ``extras["scaffold_delta_c"]``.
    server_round, state_key:
        Identify the round and the federation for partner-side state (see :mod:`molfed.federated.partner_state`):
        pass the round number and a key unique to the federation, e.g. its tracking run id.
    workspace:
        Where partner-side state lives; default ``data.workspace``.

    With private tasks (``data.layout``) the partner trains the received trunk (and shared head, if it has shared
    tasks) together with its private head from the workspace, saves the head back there and returns only the
    trunk and shared head: the update then lacks the shared head if the partner has no shared task.

    Raises
    ------
    ValueError
        If an option or tensor set is unknown, a tensor set does not match ``weights``, or SCAFFOLD state is asked
        for without a workspace.
    """
    options, tensors = dict(fit_options or {}), dict(fit_tensors or {})
    unknown = sorted(set(options) - set(FIT_OPTIONS)) + sorted(set(tensors) - set(FIT_TENSORS))
    if unknown:
        raise ValueError(f"local_update: unknown fit option(s) {unknown}; known: {[*FIT_OPTIONS, *FIT_TENSORS]}")
    train = data.splits["train"]
    ws = workspace if workspace is not None else data.workspace
    head = None
    if data.layout is not None:
        if ws is None:
            raise ValueError(f"local_update: partner {data.name}: a private head needs a workspace")
        head = ph.load_head(ws, state_key, server_round)
        model = ph.partner_model(
            spec, weights, scaling, layout=data.layout, train=train, head=head, device=resolve_device(device)
        )
        start = get_weights(model)
        weights = {n: weights[n] for n in ph.shared_weights(start)}  # what this partner trains of the global model
        tensors = {k: {n: t[n] for n in weights if n in t} for k, t in tensors.items()}
    else:
        model = materialize(spec, weights, scaling, device)
    metrics: dict[str, float] = {}
    if options.get(REPORT_LOSS_BEFORE):
        metrics[LOSS_BEFORE] = evaluate(model, train, batch_size=max(settings.batch_size, 256)).get("loss", 0.0)
    scaffold = None
    if SCAFFOLD_C in tensors:
        try:
            scaffold = start_control_step(
                model,
                train,
                weights=weights,
                control=tensors[SCAFFOLD_C],
                workspace=ws,
                state_key=state_key,
                server_round=server_round,
                batch_size=max(settings.batch_size, 256),
            )
        except ValueError as exc:
            raise ValueError(f"local_update: partner {data.name}: {exc}") from None
    result = train_local(
        model,
        train,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        optimizer=settings.optimizer,
        lr=settings.lr_at(server_round),
        weight_decay=settings.weight_decay,
        seed=seed,
        proximal_mu=float(options.get(PROXIMAL_MU, proximal_mu)),
        grad_correction=scaffold.correction() if scaffold is not None else None,
        dp=dp_settings_from_options(options),
    )
    extras: dict[str, Weights] = {}
    if scaffold is not None:
        extras[SCAFFOLD_DELTA_C] = scaffold.finish(state_key, server_round)
    trained = get_weights(model)
    if data.layout is not None and ws is not None:
        ph.save_head(ws, state_key, server_round, trained, start)
    outgoing = ph.shared_weights(trained)
    assert not any(is_private(n) for n in outgoing), "a private head must never leave the partner"
    return Update(
        partner=data.name,
        weights=outgoing,
        n_samples=result.n_samples,
        metrics={"train_loss": result.loss, **metrics},
        extras=extras,
    )


def evaluate_partner(
    data: PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    splits: Sequence[str] = ("val",),
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Metrics of the federation's model (``spec``, ``weights``) on this partner's splits for the shared tasks,
    ``{split: {metric: value}}`` ({} per split for a partner without shared tasks)."""
    model = materialize(spec, weights, scaling, device)
    if data.layout is None:
        return {s: evaluate(model, data.splits[s]) for s in splits}
    return {s: ph.column_metrics(model, data.splits[s], data.layout.shared_columns) for s in splits}


def private_model(
    data: PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    state_key: str,
    device: str = "cpu",
) -> MoleculeModel:
    """The partner's own model: the federation's ``weights`` + its latest private head from the workspace.

    Raises
    ------
    ValueError
        If the partner has no private task or no workspace.
    """
    if data.layout is None or not data.layout.private or data.workspace is None:
        raise ValueError(f"partner {data.name}: no private task (or no workspace) to build a private model for")
    head = ph.load_head(data.workspace, state_key, None)
    return ph.partner_model(
        spec, weights, scaling, layout=data.layout, train=data.splits["train"], head=head, device=resolve_device(device)
    )


def evaluate_private(model: MoleculeModel, data: PartnerData, splits: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-task metrics of the private tasks (``rmse.<task>`` ...; no means over tasks) per split."""
    assert data.layout is not None
    out = {}
    for split in splits:
        metrics = ph.column_metrics(model, data.splits[split], data.layout.private_columns)
        out[split] = {k: v for k, v in metrics.items() if "." in k}
    return out


def partner_label_moments(data: PartnerData) -> dict[str, list[float]]:
    """Per-task label count / sum / sum of squares on the training split, shared tasks only (aggregates; private
    tasks' statistics never leave the partner)."""
    if data.layout is None:
        return dict(label_moments(data.splits["train"]))
    n = data.layout.n_shared
    if not data.layout.has_shared:
        return {"count": [0.0] * n, "sum": [0.0] * n, "sumsq": [0.0] * n}
    moments = label_moments(data.splits["train"])
    return {k: list(v[:n]) for k, v in moments.items()}


def combine_moments(moments: Sequence[Mapping[str, Sequence[float]]], n_tasks: int) -> dict[str, list[float]]:
    """Federation-wide regression target mean and std from partners' moments (std 1 where undefined)."""
    count = np.zeros(n_tasks)
    total = np.zeros(n_tasks)
    sumsq = np.zeros(n_tasks)
    for m in moments:
        if len(m["count"]) == n_tasks:
            count += np.asarray(m["count"])
            total += np.asarray(m["sum"])
            sumsq += np.asarray(m["sumsq"])
    mean = np.divide(total, count, out=np.zeros(n_tasks), where=count > 0)
    var = np.divide(sumsq, count, out=np.ones(n_tasks), where=count > 0) - mean**2
    std = np.sqrt(np.where(var > 1e-12, var, 1.0))
    return {"mean": mean.tolist(), "std": std.tolist()}


def predict_split(
    data: PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    split: str = "test",
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Measured and predicted values (``[n, tasks]`` each; original units, probabilities) on ``split``: partner-side
    only."""
    from molfed.train.local import predict_graphs

    model = materialize(spec, weights, scaling, device)
    return predict_graphs(model, data.splits[split])


def parity_counts(
    data: PartnerData,
    *,
    spec: ModelSpec,
    weights: Weights,
    scaling: Mapping[str, Sequence[float]],
    task_index: int,
    edges: Sequence[float],
    device: str = "cpu",
    predictions: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[list[int]]:
    """Binned (measured, predicted) counts on the test split, sparse cells blanked: safe to leave the partner.
    ``predictions`` (from :func:`predict_split`) saves predicting again."""
    from molfed.plots import binned_parity

    if data.layout is not None and not data.layout.has_shared:  # no shared labels: an empty histogram
        return binned_parity(np.zeros(0), np.zeros(0), edges)
    if predictions is None:
        predictions = predict_split(data, spec=spec, weights=weights, scaling=scaling, device=device)
    y_true, y_pred = predictions
    return binned_parity(y_true[:, task_index], y_pred[:, task_index], edges)
