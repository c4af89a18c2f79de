"""Libraries too large for memory: streaming featurization to on-disk shards, and training from the shards.

:func:`write_shards` reads a CSV library ``chunk_size`` rows at a time, runs the same per-row pipeline as
:func:`~molfed.data.library.read_library` (parse, labels, standardize, InChIKey, graph codes, scaffold; over
``workers`` processes) and writes each chunk's kept molecules as one shard of compact codes
(:mod:`molfed.chem.encode`: ~4 bytes per atom, 9 per bond), so memory holds one chunk, not the library.
Duplicates (same InChIKey) across the whole file keep their first row (``keep_first``; the others go to
``rejects.csv`` as ``duplicate``): merging labels would need the whole library at once. The shards and the
report are written by :func:`write_shard_chunks` from featurized chunks in row order, wherever they were
featurized (here, or as Dask parts: :func:`~molfed.data.dask_featurize.shards_from_parts`).

Training from shards is :func:`molfed.train.shards.train_from_shards`. Shards hold partner data: keep them in the
partner's workspace.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch_geometric.data import Data

from molfed.chem.encode import CodeArrays, MolCodes, concat_codes
from molfed.chem.featurize import graphs_from_codes
from molfed.chem.standardize import StandardizeOptions
from molfed.data.labels import Candidate
from molfed.data.library import Outcome, Reject, TaskType, open_rejects, process_chunk
from molfed.data.parallel import map_chunks
from molfed.data.readers import Record
from molfed.errors import InputError

__all__ = ["ShardChunk", "ShardSet", "load_shard", "write_shard_chunks", "write_shards"]

_DEFAULT_STANDARDIZE = StandardizeOptions()
_Kept = tuple[Candidate, tuple[MolCodes, str]]
"""A kept molecule with its graph codes and Murcko scaffold."""


@dataclass(frozen=True, slots=True)
class ShardSet:
    """Shards written by :func:`write_shard_chunks` (and so by :func:`write_shards`)."""

    paths: tuple[Path, ...]
    n_molecules: int
    n_input_rows: int
    n_rejected: int


class ShardChunk(NamedTuple):
    """One chunk of a library, featurized: the input to :func:`write_shard_chunks`."""

    n_rows: int
    """Input rows the chunk covers (kept, duplicate and rejected)."""
    outcomes: Iterable[Outcome]
    """Each row's fate in row order, as :func:`~molfed.data.library.process_chunk` gives it with
    ``featurize=True``: a reject, or a candidate with its graph codes and Murcko scaffold."""


def _csv_chunks(
    path: Path, smiles_column: str, label_columns: Sequence[str], chunk_size: int
) -> Iterator[list[Record]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # type: ignore[operator]
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError("file is empty", path=str(path))
        missing = [c for c in (smiles_column, *label_columns) if c not in header]
        if missing:
            raise InputError(f"missing column(s) {missing}", path=str(path))
        s_col, l_cols = header.index(smiles_column), [header.index(c) for c in label_columns]
        chunk: list[Record] = []
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise InputError(f"expected {len(header)} cells, got {len(cells)}", path=str(path), row=reader.line_num)
            chunk.append(Record(reader.line_num, cells[s_col], tuple(cells[i] for i in l_cols)))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def write_shards(
    path: str | Path,
    out_dir: str | Path,
    *,
    smiles_column: str = "smiles",
    label_columns: Sequence[str],
    task_types: Sequence[TaskType],
    standardize: StandardizeOptions = _DEFAULT_STANDARDIZE,
    chunk_size: int = 50_000,
    workers: int = 1,
) -> ShardSet:
    """Featurize a CSV library (``.csv`` or ``.csv.gz``) chunk by chunk into ``out_dir/shard-NNNNN.pt``.

    Also writes ``out_dir/rejects.csv`` (see :func:`write_shard_chunks`). Raises
    :class:`~molfed.errors.InputError` for an unusable file.
    """
    work = partial(
        process_chunk,
        structure_column=smiles_column,
        label_columns=tuple(label_columns),
        task_types=tuple(task_types),
        options=standardize,
        featurize=True,
    )
    preload = ["molfed.data.library"]
    chunks = (
        ShardChunk(len(records), chain.from_iterable(map_chunks(work, records, workers, preload=preload)))
        for records in _csv_chunks(Path(path), smiles_column, label_columns, chunk_size)
    )
    return write_shard_chunks(chunks, out_dir, n_tasks=len(label_columns), structure_column=smiles_column)


def write_shard_chunks(
    chunks: Iterable[ShardChunk], out_dir: str | Path, *, n_tasks: int, structure_column: str
) -> ShardSet:
    """Write one shard per chunk that keeps a molecule, and every chunk's rejects to ``out_dir/rejects.csv``.

    Chunks come in row order and are consumed one at a time. A molecule seen in an earlier row (same InChIKey, or
    the same canonical SMILES where InChI failed) is rejected as ``duplicate`` in ``structure_column``: the first
    occurrence is kept, as ``keep_first`` would. Shards are ``out_dir/shard-NNNNN.pt``, numbered from 0.

    Parameters
    ----------
    chunks
        Featurized chunks in row order (a lazy iterator keeps one chunk in memory).
    out_dir
        Folder for the shards and ``rejects.csv`` (created); it holds partner data.
    n_tasks
        Label columns per molecule (the width of each shard's ``y``).
    structure_column
        Column named in the ``duplicate`` rejects.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    paths: list[Path] = []
    n_rows = n_kept = n_rejected = 0
    with open_rejects(out / "rejects.csv") as add_rejects:
        for chunk in chunks:
            n_rows += chunk.n_rows
            kept, rejects = _first_occurrences(chunk.outcomes, seen, structure_column)
            add_rejects(rejects)
            n_rejected += len(rejects)
            if kept:
                paths.append(out / f"shard-{len(paths):05d}.pt")
                _save_shard(paths[-1], kept, n_tasks)
                n_kept += len(kept)
    return ShardSet(tuple(paths), n_kept, n_rows, n_rejected)


def _first_occurrences(
    outcomes: Iterable[Outcome], seen: set[str], structure_column: str
) -> tuple[list[_Kept], list[Reject]]:
    """Split a chunk into kept candidates and rejects (later occurrences as ``duplicate``); updates ``seen``."""
    kept: list[_Kept] = []
    rejects: list[Reject] = []
    for outcome, extra in outcomes:
        if isinstance(outcome, Reject):
            rejects.append(outcome)
        elif (key := outcome.inchikey or f"smiles:{outcome.smiles}") in seen:
            rejects.append(Reject(outcome.row, "duplicate", structure_column, "same molecule as an earlier row"))
        else:
            seen.add(key)
            assert extra is not None, "shards need featurized outcomes"
            kept.append((outcome, extra))
    return kept, rejects


def _save_shard(path: Path, kept: Sequence[_Kept], n_tasks: int) -> None:
    codes = concat_codes(mol_codes for _, (mol_codes, _) in kept)
    y = np.asarray([c.labels for c, _ in kept], dtype=np.float32).reshape(len(kept), n_tasks)
    payload = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in codes._asdict().items()}
    scaffolds = "\n".join(scaffold for _, (_, scaffold) in kept)
    torch.save({**payload, "y": torch.from_numpy(y), "scaffolds": scaffolds}, path)


def load_shard(path: Path) -> tuple[Data, ...]:
    """One shard's graphs (with ``y``)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    codes = CodeArrays(**{name: payload[name].numpy() for name in CodeArrays._fields})
    return graphs_from_codes(codes, payload["y"].numpy())
