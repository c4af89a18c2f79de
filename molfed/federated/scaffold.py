"""SCAFFOLD's partner side (Karimireddy et al. 2020): control variates kept in the partner's workspace.

Per round a partner receives the server control variate ``c``, loads its own ``c_i`` (zeros at first), trains with
every gradient corrected by ``c - c_i``, and replaces ``c_i`` by ``c_i+``. We use the paper's option I,
``c_i+ = gradient of the partner's loss at the received weights`` (one extra pass over the training split): option
II, ``c_i - c + (x - y_i) / (K lr)``, assumes plain SGD steps and would mix Adam step sizes into gradient units.
``c_i`` never leaves the partner; only ``c_i+ - c_i`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from molfed.federated.partner_state import load_state, save_state
from molfed.federated.types import SCAFFOLD_C, Weights, check_compatible
from molfed.models.model import MoleculeModel
from molfed.train.local import full_gradient

STATE_NAME = "scaffold_c_i"
"""Name of the partner-state file holding ``c_i`` (see :mod:`molfed.federated.partner_state`)."""


@dataclass(frozen=True, slots=True)
class ControlStep:
    """One partner's SCAFFOLD round; all dicts map weight names to float32 arrays."""

    workspace: Path
    c: dict[str, np.ndarray]
    """Server control variate received this round."""
    c_i: dict[str, np.ndarray]
    """This partner's control variate before the round."""
    new_c_i: dict[str, np.ndarray]
    """``c_i+``: the training-split gradient at the received weights."""

    def correction(self) -> dict[str, torch.Tensor]:
        """``c - c_i``, added to every local gradient."""
        return {n: torch.from_numpy(self.c[n] - self.c_i[n]) for n in self.c}

    def finish(self, state_key: str, server_round: int) -> dict[str, np.ndarray]:
        """Save ``c_i+`` in the workspace and return ``c_i+ - c_i`` for the server."""
        save_state(self.workspace, state_key, STATE_NAME, server_round, self.new_c_i, self.c_i)
        return {n: self.new_c_i[n] - self.c_i[n] for n in self.new_c_i}


def start_control_step(
    model: MoleculeModel,
    graphs: Sequence[Data],
    *,
    weights: Weights,
    control: Weights,
    workspace: Path | None,
    state_key: str,
    server_round: int,
    batch_size: int = 256,
) -> ControlStep:
    """Load ``c_i`` and compute ``c_i+`` at the received ``weights`` (which ``model`` must hold).

    Raises
    ------
    ValueError
        If ``workspace`` is None or ``control`` does not match ``weights`` in names or shapes.
    """
    if workspace is None:
        raise ValueError("SCAFFOLD keeps partner state between rounds, but no workspace was given")
    problem = check_compatible(weights, control)
    if problem is not None:
        raise ValueError(f"fit tensors {SCAFFOLD_C!r}: {problem}")
    c = {n: np.asarray(control[n], np.float32) for n in weights}
    c_i = load_state(Path(workspace), state_key, STATE_NAME, server_round, weights)
    gradient = full_gradient(model, graphs, batch_size=batch_size)
    return ControlStep(Path(workspace), c, c_i, {n: gradient[n] for n in weights})
