"""Partner-side cache of featurized graphs, in the partner's workspace, keyed by what determines its content.

The key covers the library file's SHA-256, the featurizer signature, the cache format, standardization and
duplicate options and the label columns, so a changed library or featurizer re-featurizes and an unchanged one
loads in milliseconds. Graphs are stored as their compact codes (:mod:`molfed.chem.encode`: 4 bytes per atom,
9 per bond) plus labels, scaffolds and the rejects report, as tensors and plain lists
(``torch.load(weights_only=True)``-safe), never pickled objects, and never leave the workspace. A cache hit
rewrites ``rejects.csv`` exactly as the cold run did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from molfed.chem.encode import CodeArrays, concat_codes
from molfed.chem.featurize import featurizer_signature, graphs_from_codes
from molfed.chem.standardize import StandardizeOptions
from molfed.data.library import Reject, file_digest, read_library, write_rejects
from molfed.data.readers import missing_reason
from molfed.errors import InputError

__all__ = ["CACHE_FORMAT", "FeaturizedLibrary", "cache_key", "featurize_library", "save_featurized"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Version of the cache file layout; part of the key."""


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
        "format": CACHE_FORMAT,
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
    workers: int = 1,
) -> FeaturizedLibrary:
    """Load a library's graphs from the workspace cache, or read, featurize and cache it.

    Either way ``<workspace>/rejects.csv`` is (re)written with the library's rejects. ``workers`` processes
    share the per-molecule work of a cold run (see :func:`~molfed.data.library.read_library`). Raises
    :class:`~molfed.errors.InputError` for unusable libraries.
    """
    path = Path(path)
    if not path.is_file():
        what = missing_reason(path) if not path.exists() else "is a directory, expected a library file"
        raise InputError(what, path=str(path), partner=partner)
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
            result, rejects = _load(cache_file, digest)
        except Exception as exc:  # a corrupt cache is rebuilt, never trusted
            log.warning("partner %s: ignoring unreadable graph cache (%s)", partner, type(exc).__name__)
        else:
            write_rejects(rejects, workspace / "rejects.csv", partner=partner)
            return result
    library = read_library(
        path,
        smiles_column=smiles_column,
        label_columns=label_columns,
        task_types=task_types,  # type: ignore[arg-type]
        standardize=standardize,
        duplicates=duplicates,  # type: ignore[arg-type]
        partner=partner,
        featurize=True,
        workers=workers,
    )
    rejects = library.report_rows()  # with the notes: kept rows to review
    write_rejects(rejects, workspace / "rejects.csv", partner=partner)  # creates the workspace
    assert library.codes is not None and library.scaffolds is not None
    return save_featurized(
        cache_file,
        concat_codes(library.codes),
        library.labels,
        scaffolds=library.scaffolds,
        digest=library.digest,
        n_input_rows=library.n_input_rows,
        n_duplicates_merged=library.n_duplicates_merged,
        rejects=rejects,
    )


def save_featurized(
    cache_file: Path,
    codes: CodeArrays,
    labels: np.ndarray,
    *,
    scaffolds: Sequence[str],
    digest: str,
    n_input_rows: int,
    n_duplicates_merged: int,
    rejects: Sequence[Reject],
) -> FeaturizedLibrary:
    """Build a featurized library's graphs and write its cache file, which :func:`featurize_library` then loads.

    For libraries featurized elsewhere (:func:`~molfed.data.dask_featurize.library_from_parts`) as well as here.
    The file is replaced atomically (a killed run never leaves half of one); parent folders are created.

    Parameters
    ----------
    cache_file
        Where :func:`featurize_library` looks for this library (``workspace/cache/graphs-<key>.pt``).
    codes
        Concatenated graph codes of the ``n`` kept molecules, in order.
    labels
        float32 ``[n, n_tasks]`` (NaN: missing).
    scaffolds
        Murcko scaffold SMILES of each molecule (``n``).
    digest, n_input_rows, n_duplicates_merged
        As in :class:`~molfed.data.library.Library`.
    rejects
        The library's rejects and notes, sorted by row (``rejects.csv`` is rewritten from them on a cache hit;
        ``reject_counts`` counts both, by reason).

    Returns
    -------
    FeaturizedLibrary
        With ``cache_hit=False``.
    """
    lib = FeaturizedLibrary(
        graphs=graphs_from_codes(codes, labels),
        scaffolds=tuple(scaffolds),
        digest=digest,
        n_input_rows=n_input_rows,
        n_duplicates_merged=n_duplicates_merged,
        reject_counts=dict(sorted(Counter(r.reason for r in rejects).items())),
        cache_hit=False,
    )
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **{name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in codes._asdict().items()},
        "y": torch.from_numpy(labels),
        "scaffolds": "\n".join(lib.scaffolds),  # one string: weights_only unpickling is slow per object
        "rejects": [[r.row, r.reason, r.column, r.detail] for r in rejects],
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
    return lib


def _load(cache_file: Path, digest: str) -> tuple[FeaturizedLibrary, list[Reject]]:
    payload = torch.load(cache_file, map_location="cpu", weights_only=True)
    meta = payload["meta"]
    if meta["digest"] != digest:
        raise ValueError("digest mismatch")
    codes = CodeArrays(**{name: payload[name].numpy() for name in CodeArrays._fields})
    scaffolds = tuple(payload["scaffolds"].split("\n"))
    if not len(codes.num_atoms) == len(scaffolds) == len(payload["y"]):
        raise ValueError("inconsistent cache")
    lib = FeaturizedLibrary(
        graphs=graphs_from_codes(codes, payload["y"].numpy()),
        scaffolds=scaffolds,
        digest=meta["digest"],
        n_input_rows=int(meta["n_input_rows"]),
        n_duplicates_merged=int(meta["n_duplicates_merged"]),
        reject_counts={str(k): int(v) for k, v in meta["reject_counts"].items()},
        cache_hit=True,
    )
    rejects = [Reject(int(row), str(reason), str(col), str(detail)) for row, reason, col, detail in payload["rejects"]]
    return lib, rejects
