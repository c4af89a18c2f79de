"""Partner-private state kept in the partner's workspace between rounds (SCAFFOLD's ``c_i``, a private head).

One file per (federation, state name): ``<workspace>/federation_state/<state_key>/<name>.npz``, written atomically,
holding the tensors after the round that wrote it, the tensors it started from, and that round's number. It never
leaves the partner. Which tensors :func:`load_state` returns for round ``r``:

- nothing saved, or a file written by a *later* round than ``r`` (another federation under the same key): zeros;
- written by an earlier round: the saved tensors (a partner that sat out rounds keeps its state, as SCAFFOLD wants);
- written by round ``r`` itself (the round is being retried): the tensors that round started from.

A file whose names or shapes do not match the model also gives zeros. Use a key unique to the federation (the
tracking run id) so two federations sharing a workspace do not mix state.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import numpy as np

from molfed.federated.types import Weights, check_compatible

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ROUND, _NEW, _OLD = "__round__", "new.", "old."


def safe_name(text: str) -> str:
    """``text`` with characters unsafe in a file name replaced by ``_``."""
    return _SAFE.sub("_", text)


def model_dir(workspace: Path, state_key: str) -> Path:
    """Where a partner's final model of federation ``state_key`` is exported (and a ``mondrian`` calibration kept)."""
    return Path(workspace) / "models" / safe_name(state_key)


def state_path(workspace: Path, state_key: str, name: str) -> Path:
    """Where state ``name`` of federation ``state_key`` lives in ``workspace`` (unsafe characters become ``_``)."""
    return Path(workspace) / "federation_state" / _SAFE.sub("_", state_key) / f"{_SAFE.sub('_', name)}.npz"


def load_state(
    workspace: Path, state_key: str, name: str, server_round: int, reference: Weights
) -> dict[str, np.ndarray]:
    """The tensors to use in round ``server_round`` (see the module docstring), float32, shaped like ``reference``."""
    zeros = {n: np.zeros(np.shape(a), np.float32) for n, a in reference.items()}
    tensors = load_saved(workspace, state_key, name, server_round)
    if tensors is None:
        return zeros
    problem = check_compatible(reference, tensors)
    if problem is not None:
        log.warning("%s does not match the model (%s): starting from zeros", name, problem)
        return zeros
    return tensors


def load_saved(workspace: Path, state_key: str, name: str, server_round: int | None) -> dict[str, np.ndarray] | None:
    """The saved tensors to use in round ``server_round`` (see the module docstring), or None where the module
    docstring says zeros (nothing saved, or saved by a later round). ``server_round=None`` asks for the tensors
    after the latest saved round (e.g. to export a final model). The caller checks names and shapes."""
    path = state_path(workspace, state_key, name)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        saved_round = int(data[_ROUND])
        if server_round is not None and saved_round > server_round:
            log.warning(
                "%s: saved by round %d, asked for round %d: starting afresh", path.name, saved_round, server_round
            )
            return None
        prefix = _NEW if server_round is None or saved_round < server_round else _OLD
        return {k.removeprefix(prefix): np.asarray(data[k], np.float32) for k in data.files if k.startswith(prefix)}


def save_state(workspace: Path, state_key: str, name: str, server_round: int, new: Weights, old: Weights) -> Path:
    """Write the tensors after round ``server_round`` (``new``) and before it (``old``); atomic replace."""
    path = state_path(workspace, state_key, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {_ROUND: np.asarray(server_round, np.int64)}
    arrays.update({_NEW + n: np.asarray(a, np.float32) for n, a in new.items()})
    arrays.update({_OLD + n: np.asarray(a, np.float32) for n, a in old.items()})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path
