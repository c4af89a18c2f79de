"""Partner-side cache of featurized graphs, in the partner's workspace, keyed by what determines its content.

The key covers the library file's SHA-256, the featurizer signature, standardization and duplicate options and
the label columns, so a changed library or featurizer re-featurizes and an unchanged one loads in milliseconds.
Graphs are stored as concatenated tensors plus offsets (``torch.load(weights_only=True)``-safe), never pickled
objects, and never leave the workspace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch_geometric.data import Data

from molfed.chem.featurize import featurizer_signature, mol_to_graph
from molfed.chem.standardize import StandardizeOptions
from molfed.data.library import Library, file_digest, read_library, write_rejects
from molfed.data.split import murcko_scaffold
from molfed.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FeaturizedLibrary:
    """A partner's molecules as graphs, with what the split and the reports need (all partner-private)."""

    graphs: tuple[Data, ...]
    scaffolds: tuple[str, ...]
    """Murcko scaffold SMILES per graph (for the scaffold split)."""
    digest: str
    n_input_rows: int
    n_duplicates_merged: int
    reject_counts: dict[str, int]
    cache_hit: bool


def cache_key(
    digest: str,
    *,
    smiles_column: str,
    label_columns: Sequence[str],
    task_types: Sequence[str],
    standardize: StandardizeOptions,
    duplicates: str,
) -> str:
    payload = {
        "library": digest,
        "featurizer": featurizer_signature(),
        "smiles_column": smiles_column,
        "labels": list(label_columns),
        "task_types": list(task_types),
        "standardize": asdict(standardize),
        "duplicates": duplicates,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def featurize_library(
    path: Path,
    workspace: Path,
    *,
    smiles_column: str,
    label_columns: Sequence[str],
    task_types: Sequence[str],
    standardize: StandardizeOptions,
    duplicates: str,
    partner: str | None = None,
) -> FeaturizedLibrary:
    """Load a library's graphs from the workspace cache, or read, featurize and cache it.

    On a miss, ``<workspace>/rejects.csv`` is rewritten. Raises :class:`~molfed.errors.InputError` for unusable
    libraries (see :func:`~molfed.data.library.read_library`).
    """
    path = Path(path)
    if not path.is_file():
        what = "not found" if not path.exists() else "is a directory, expected a file"
        raise InputError(f"library {what}", path=str(path), partner=partner)
    digest = file_digest(path)
    key = cache_key(
        digest,
        smiles_column=smiles_column,
        label_columns=label_columns,
        task_types=task_types,
        standardize=standardize,
        duplicates=duplicates,
    )
    cache_file = workspace / "cache" / f"graphs-{key}.pt"
    if cache_file.exists():
        try:
            return _load(cache_file, digest)
        except Exception as exc:  # a corrupt cache is rebuilt, never trusted
            log.warning("partner %s: ignoring unreadable graph cache (%s)", partner, type(exc).__name__)
    library = read_library(
        path,
        smiles_column=smiles_column,
        label_columns=label_columns,
        task_types=task_types,  # type: ignore[arg-type]
        standardize=standardize,
        duplicates=duplicates,  # type: ignore[arg-type]
        partner=partner,
    )
    workspace.mkdir(parents=True, exist_ok=True)
    write_rejects(library.rejects, workspace / "rejects.csv")
    result = _featurize(library)
    _save(cache_file, result)
    return result


def _featurize(library: Library) -> FeaturizedLibrary:
    graphs = tuple(mol_to_graph(mol, y) for mol, y in zip(library.mols, library.labels, strict=True))
    scaffolds = tuple(murcko_scaffold(mol) for mol in library.mols)
    return FeaturizedLibrary(
        graphs=graphs,
        scaffolds=scaffolds,
        digest=library.digest,
        n_input_rows=library.n_input_rows,
        n_duplicates_merged=library.n_duplicates_merged,
        reject_counts=dict(library.reject_counts()),
        cache_hit=False,
    )


def _save(cache_file: Path, lib: FeaturizedLibrary) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "x": torch.cat([g.x for g in lib.graphs]),
        "edge_index": torch.cat([g.edge_index for g in lib.graphs], dim=1),
        "edge_attr": torch.cat([g.edge_attr for g in lib.graphs]),
        "y": torch.cat([g.y for g in lib.graphs]),
        "num_nodes": torch.tensor([g.num_nodes for g in lib.graphs]),
        "num_edges": torch.tensor([g.edge_index.shape[1] for g in lib.graphs]),
        "scaffolds": list(lib.scaffolds),
        "meta": {
            "digest": lib.digest,
            "n_input_rows": lib.n_input_rows,
            "n_duplicates_merged": lib.n_duplicates_merged,
            "reject_counts": lib.reject_counts,
        },
    }
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    tmp.replace(cache_file)  # atomic: a killed run never leaves a half-written cache


def _load(cache_file: Path, digest: str) -> FeaturizedLibrary:
    payload = torch.load(cache_file, map_location="cpu", weights_only=True)
    meta = payload["meta"]
    if meta["digest"] != digest:
        raise ValueError("digest mismatch")
    x_parts = torch.split(payload["x"], payload["num_nodes"].tolist())
    e_counts = payload["num_edges"].tolist()
    ei_parts = torch.split(payload["edge_index"], e_counts, dim=1)
    ea_parts = torch.split(payload["edge_attr"], e_counts)
    ys = payload["y"]
    graphs = tuple(
        Data(x=x, edge_index=ei, edge_attr=ea, y=ys[i : i + 1])
        for i, (x, ei, ea) in enumerate(zip(x_parts, ei_parts, ea_parts, strict=True))
    )
    if len(graphs) != len(payload["scaffolds"]):
        raise ValueError("inconsistent cache")
    return FeaturizedLibrary(
        graphs=graphs,
        scaffolds=tuple(payload["scaffolds"]),
        digest=meta["digest"],
        n_input_rows=int(meta["n_input_rows"]),
        n_duplicates_merged=int(meta["n_duplicates_merged"]),
        reject_counts={str(k): int(v) for k, v in meta["reject_counts"].items()},
        cache_hit=True,
    )
