"""Chemistry: parsing, standardization and graph featurization of molecules.

Names are imported lazily, so that ``molfed.chem.standardize`` and ``molfed.chem.encode`` (RDKit and numpy only)
load without torch: featurization worker processes start in a fraction of the time.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ATOM_DIM": "featurize",
    "BOND_DIM": "featurize",
    "FEATURIZER_VERSION": "featurize",
    "featurizer_signature": "featurize",
    "mol_to_graph": "featurize",
    "StandardizeOptions": "standardize",
    "parse_smiles": "standardize",
    "reason_detail": "standardize",
    "standardize_mol": "standardize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"molfed.chem.{_EXPORTS[name]}"), name)
