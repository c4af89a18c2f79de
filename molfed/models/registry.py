"""The encoder registry, importable without torch (the config layer validates names against it).

Adding an encoder: one module with an ``nn.Module`` whose constructor takes ``in_channels``, ``edge_dim``,
``hidden_channels``, ``num_layers`` and ``dropout`` and whose ``forward(x, edge_index, edge_attr, batch)`` returns
node embeddings (class attribute ``graph_level = False``: a readout pools them) or graph embeddings
(``graph_level = True``), plus one line in :data:`ENCODERS`. ``tests/models/test_model.py`` then builds and trains it.
"""

from __future__ import annotations

import importlib
from typing import Any

ENCODERS: dict[str, str] = {
    "attentivefp": "molfed.models.encoders:AttentiveFPEncoder",
    "gine": "molfed.models.encoders:GINEEncoder",
}
"""Encoder name -> ``module:class``."""


def encoder_names() -> tuple[str, ...]:
    """Every registered encoder name, sorted."""
    return tuple(sorted(ENCODERS))


def encoder_class(name: str) -> Any:
    """The class registered as ``name`` (imports its module, and torch with it).

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the choices.
    """
    try:
        module, attr = ENCODERS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose from {list(encoder_names())}") from None
    return getattr(importlib.import_module(module), attr)
