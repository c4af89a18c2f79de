"""Round checkpoints: everything the coordinator needs to continue a federation after its last complete round.

A :class:`Checkpoint` holds the global weights, the strategy's server state (``Strategy.state_dict()``), the round
number, the coordinator's RNG states, the per-round history the end-of-run report needs, a fingerprint of what the
partners reported (digests, target scaling: a resume refuses changed libraries) and any number of named extra
sections. It is written as one ``.npz`` file without pickle: arrays by key plus one JSON document, so floats and
arrays round-trip bit for bit and loading a checkpoint cannot execute code.

Adding a section of state (e.g. a privacy accountant) is one line before the round loop::

    sections.add("accountant", accountant.state_dict, accountant.load_state_dict)

Partner-private state (SCAFFOLD's ``c_i``) stays with the partners: :mod:`molfed.federated.partner_state` keeps
the tensors each round started from, so a round re-run after a resume starts from the last *complete* round's state.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FORMAT = "molfed-checkpoint/1"
_META, _ARRAY = "__meta__", "__ndarray__"


@dataclass(slots=True)
class RoundHistory:
    """What the rounds so far produced for the end-of-run report (aggregates only)."""

    val: list[dict[str, dict[str, float]]] = field(default_factory=list)
    """Per completed evaluation step: partner -> validation metric -> value."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Per round: ``{"round": r, "train_loss": ..., "val_<metric>": ...}``."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The coordinator's state after round ``server_round`` (0: before the first round)."""

    server_round: int
    weights: dict[str, np.ndarray]
    """Global weights after the round, float32."""
    strategy: dict[str, Any]
    """``Strategy.state_dict()`` after the round."""
    rng: dict[str, Any]
    """The coordinator process's RNG states (see :func:`capture_rng`)."""
    history: RoundHistory
    fingerprint: dict[str, Any]
    """Partner digests and target scaling the run started with; a resume checks them."""
    sections: dict[str, Any] = field(default_factory=dict)
    """Named extra state (see :class:`Sections`)."""


class Sections:
    """Named extra state saved with every checkpoint and restored on resume.

    ``add(name, save, load)``: ``save()`` returns JSON-able values and numpy arrays (nested dicts with string keys
    and lists allowed); ``load(value)`` restores it. A section missing from an older checkpoint is not loaded.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}

    def add(self, name: str, save: Callable[[], Any], load: Callable[[Any], None]) -> None:
        """Register a section.

        Raises
        ------
        ValueError
            If ``name`` is already registered.
        """
        if name in self._items:
            raise ValueError(f"checkpoint section {name!r} is already registered")
        self._items[name] = (save, load)

    def save(self) -> dict[str, Any]:
        return {name: save() for name, (save, _) in self._items.items()}

    def load(self, saved: Mapping[str, Any]) -> None:
        for name, (_, load) in self._items.items():
            if name in saved:
                load(saved[name])


def capture_rng() -> dict[str, Any]:
    """Python's, NumPy's legacy global and torch's CPU RNG states."""
    version, state, gauss = random.getstate()
    return {
        "python": [version, list(state), gauss],
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state().numpy().copy(),
    }


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Restore :func:`capture_rng` output."""
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(torch.from_numpy(np.asarray(rng["torch"], dtype=np.uint8)))


def to_bytes(checkpoint: Checkpoint) -> bytes:
    """Serialize ``checkpoint`` as an ``.npz`` document (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    doc = {
        "format": FORMAT,
        "server_round": checkpoint.server_round,
        "weights": checkpoint.weights,
        "strategy": checkpoint.strategy,
        "rng": checkpoint.rng,
        "history": {"val": checkpoint.history.val, "rows": checkpoint.history.rows},
        "fingerprint": checkpoint.fingerprint,
        "sections": checkpoint.sections,
    }
    meta = json.dumps(_encode(doc, arrays), allow_nan=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.asarray(meta)}, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def from_bytes(data: bytes) -> Checkpoint:
    """Read :func:`to_bytes` output.

    Raises
    ------
    ValueError
        If ``data`` is not a molfed checkpoint (corrupt, truncated, other format).
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        doc = _decode(json.loads(str(arrays.pop(_META))), arrays)
    except Exception as exc:  # zip, JSON and key errors alike: an unusable file
        raise ValueError(f"not a readable molfed checkpoint ({type(exc).__name__})") from None
    if doc.get("format") != FORMAT:
        raise ValueError(f"checkpoint format: got {doc.get('format')!r}, expected {FORMAT!r}")
    return Checkpoint(
        server_round=int(doc["server_round"]),
        weights={n: np.asarray(a, np.float32) for n, a in doc["weights"].items()},
        strategy=doc["strategy"],
        rng=doc["rng"],
        history=RoundHistory(doc["history"]["val"], doc["history"]["rows"]),
        fingerprint=doc["fingerprint"],
        sections=doc["sections"],
    )


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray | torch.Tensor):
        key = f"a{len(arrays)}"
        arrays[key] = value.numpy() if isinstance(value, torch.Tensor) else value
        return {_ARRAY: key}
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"checkpoint: mapping keys must be strings, got {bad[:3]!r}")
        return {k: _encode(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__}")


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return arrays[value[_ARRAY]]
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value
