"""Convert between torch modules and :data:`~molfed.federated.types.Weights` (numpy), and check compatibility.

Only floating-point state travels; the federation-wide fixed buffers (target scaling, task kinds) are set by
the coordinator when the model is built and never averaged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from molfed.federated.types import Weights, check_compatible
from molfed.models.model import FIXED_BUFFERS


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Copy a model's floating-point state (parameters and float buffers) into float32 numpy arrays."""
    return {
        name: tensor.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and name.rsplit(".", 1)[-1] not in FIXED_BUFFERS
    }


def set_weights(model: nn.Module, weights: Weights) -> None:
    """Load ``weights`` into ``model`` in place.

    Raises
    ------
    ValueError
        If names or shapes differ from the model's (see :func:`check_compatible`).
    """
    problem = check_compatible(get_weights(model), weights)
    if problem:
        raise ValueError(problem)
    device = next(model.parameters()).device
    state = {name: torch.from_numpy(np.asarray(array)).to(device) for name, array in weights.items()}
    model.load_state_dict(state, strict=False)


def weights_digest(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, shapes and float32 bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        digest.update(name.encode())
        digest.update(str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def save_weights(weights: Weights, path: str) -> None:
    """Write weights as a torch file loadable with ``weights_only=True``."""
    torch.save({name: torch.from_numpy(np.asarray(a)) for name, a in weights.items()}, path)


def load_weights(path: str) -> dict[str, np.ndarray]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: tensor.numpy() for name, tensor in state.items()}
