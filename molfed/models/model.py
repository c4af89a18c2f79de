"""Molecular property model = encoder + readout (the trunk) + MLP heads, composed in one constructor.

The shared head (``head``) has one output per shared task; a partner's model may add a private head
(``private_head``) with one output per task only that partner has (``ModelSpec.n_private_tasks``, the last task
names). Outputs are the shared head's columns, then the private head's. Regression targets are learnt in
standardized units; the model carries target means and standard deviations as buffers, so
:meth:`MoleculeModel.predict` returns values in the original units and probabilities for classification tasks.

Weight names tell the parts apart: :data:`~molfed.models.naming.SHARED_HEAD_PREFIX` (federated, may be absent
from a partner's update when the partner has no shared task) and :data:`PRIVATE_HEAD_PREFIX` (never leaves the
partner); the rest is the trunk.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from molfed.models.encoders import build_encoder

_SEEDED_BUILD = threading.Lock()
"""Seeded builds reseed torch's process-wide generator: partners building models in concurrent threads take turns."""
_POOLS = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}

#: Buffers that are set once for the federation and never averaged.
FIXED_BUFFERS = ("target_mean", "target_std", "is_classification")
#: Weight-name prefix of a partner's private head: these tensors never leave the partner.
PRIVATE_HEAD_PREFIX = "private_head."


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (stored beside its weights)."""

    encoder: str
    in_channels: int
    edge_dim: int
    hidden_channels: int
    num_layers: int
    dropout: float
    readout: str
    head_layers: int
    task_names: tuple[str, ...]
    task_types: tuple[str, ...]
    n_private_tasks: int = 0
    """The last ``n_private_tasks`` of ``task_names`` are a partner's private tasks (private head); 0 for the
    federation's model. With no shared task left the model has no shared head."""

    @property
    def n_shared_tasks(self) -> int:
        return len(self.task_names) - self.n_private_tasks

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelSpec:
        fields = dict(data)
        fields["task_names"] = tuple(fields["task_names"])  # type: ignore[arg-type]
        fields["task_types"] = tuple(fields["task_types"])  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


class Readout(nn.Module):
    """Pool node embeddings ``[num_nodes, C]`` into graph embeddings ``[num_graphs, C]``."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in _POOLS:
            raise ValueError(f"unknown readout {mode!r}; choose from {sorted(_POOLS)}")
        self.mode = mode

    def forward(self, h: Tensor, batch: Tensor) -> Tensor:
        return _POOLS[self.mode](h, batch)


class MLPHead(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``[B, C] -> [B, out_channels]``."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(num_layers - 1):
            layers += [nn.Linear(in_channels, in_channels), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(in_channels, out_channels))
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class MoleculeModel(nn.Module):
    """Encoder -> readout -> head. ``forward`` returns raw outputs ``[num_graphs, n_tasks]`` (standardized
    regression values, classification logits)."""

    target_mean: Tensor
    target_std: Tensor
    is_classification: Tensor

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.encoder = build_encoder(
            spec.encoder,
            in_channels=spec.in_channels,
            edge_dim=spec.edge_dim,
            hidden_channels=spec.hidden_channels,
            num_layers=spec.num_layers,
            dropout=spec.dropout,
        )
        self.readout = None if getattr(self.encoder, "graph_level", False) else Readout(spec.readout)
        if not 0 <= spec.n_private_tasks <= len(spec.task_names) or not spec.task_names:
            raise ValueError(
                f"ModelSpec: got {len(spec.task_names)} task(s) with n_private_tasks={spec.n_private_tasks}, expected "
                "at least one task and 0 <= n_private_tasks <= number of tasks"
            )
        n_shared, n_private = spec.n_shared_tasks, spec.n_private_tasks
        self.head = MLPHead(spec.hidden_channels, n_shared, spec.head_layers, spec.dropout) if n_shared else None
        self.private_head = (
            MLPHead(spec.hidden_channels, n_private, spec.head_layers, spec.dropout) if n_private else None
        )
        n_tasks = len(spec.task_names)
        self.register_buffer("target_mean", torch.zeros(n_tasks))
        self.register_buffer("target_std", torch.ones(n_tasks))
        flags = torch.tensor([t == "classification" for t in spec.task_types], dtype=torch.bool)
        self.register_buffer("is_classification", flags)

    def embed(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        """Graph embeddings ``[num_graphs, hidden_channels]``: the trunk's output, what the heads read."""
        h = self.encoder(x, edge_index, edge_attr, batch)
        return self.readout(h, batch) if self.readout is not None else h

    def apply_heads(self, h: Tensor) -> Tensor:
        """Raw outputs ``[num_graphs, n_tasks]`` from graph embeddings ``h``."""
        heads = [head for head in (self.head, self.private_head) if head is not None]
        return heads[0](h) if len(heads) == 1 else torch.cat([head(h) for head in heads], dim=1)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        return self.apply_heads(self.embed(x, edge_index, edge_attr, batch))

    def forward_batch(self, data: Batch) -> Tensor:
        return self(data.x, data.edge_index, data.edge_attr, data.batch)

    def set_target_scaling(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set regression target statistics (ignored for classification tasks)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6)
        cls = self.is_classification
        self.target_mean.copy_(torch.where(cls, torch.zeros_like(mean_t), mean_t))
        self.target_std.copy_(torch.where(cls, torch.ones_like(std_t), std_t))

    def scale_targets(self, y: Tensor) -> Tensor:
        """Standardize regression columns of ``y`` (classification columns pass through)."""
        return torch.where(self.is_classification, y, (y - self.target_mean) / self.target_std)

    def to_predictions(self, out: Tensor) -> Tensor:
        """Raw outputs -> original units (regression) or probabilities (classification)."""
        return torch.where(self.is_classification, torch.sigmoid(out), out * self.target_std + self.target_mean)

    @torch.no_grad()
    def predict(self, data: Batch) -> Tensor:
        """Predictions in original units (regression) or probabilities (classification), ``[num_graphs, n_tasks]``."""
        return self.to_predictions(self.forward_batch(data))


def is_private(name: str) -> bool:
    """Whether weight ``name`` belongs to a partner's private head (and must never leave the partner)."""
    return name.startswith(PRIVATE_HEAD_PREFIX)


def build_model(spec: ModelSpec, *, seed: int | None = None) -> MoleculeModel:
    """Build a model; with ``seed`` its initial weights are reproducible, and the global RNG's state is restored.

    Layer initialisation draws from torch's process-wide generator, so seeded builds hold a lock: two partners
    of one process building their models in threads at once would otherwise interleave their draws (the initial
    private heads then depended on thread timing).
    """
    if seed is None:
        return MoleculeModel(spec)
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MoleculeModel(spec)
