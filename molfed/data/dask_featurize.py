"""Featurization split into row-range chunks that run anywhere the library file and the workspace are reachable.

The Prefect/Dask fan-out (``tasks/dask_featurize.py``) sends each worker only a :class:`Chunk` -- the library path,
a row range and where to write -- and gets back only a :class:`ChunkResult` (counts, digests, the part's path, which
worker ran it). :func:`featurize_chunk` runs the per-row pipeline of :func:`~molfed.data.library.read_library`
(parse, labels, standardize, InChIKey, graph codes, scaffold) on its rows and writes a *part* file in the partner's
workspace. Duplicates can span chunks, so the partner then merges the parts in row order, in its own process:
:func:`library_from_parts` applies the library's duplicate policy exactly as ``read_library`` does and writes the
graph cache that :func:`~molfed.data.cache.featurize_library` loads; :func:`shards_from_parts` hands the parts to
the shard writer of :func:`~molfed.data.shards.write_shards`. Either result is identical to the in-process path
(same molecules, order, codes and rejects).

Part files are plain NumPy ``.npz`` arrays (loaded with ``allow_pickle=False``), so workers need neither torch nor
PyG. They hold partner data (codes, labels, InChIKeys, reject details): they stay in the workspace.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from molfed.chem.encode import CodeArrays, MolCodes, concat_codes, split_codes
from molfed.chem.standardize import StandardizeOptions
from molfed.data.labels import Candidate, resolve_duplicates
from molfed.data.library import Outcome, Reject, file_digest, process_chunk
from molfed.data.readers import STRUCTURE_COLUMN_SDF, read_records, suffix_of
from molfed.errors import InputError

if TYPE_CHECKING:  # the merge side needs torch; workers import only what a chunk needs (no torch, no PyG)
    from molfed.data.cache import FeaturizedLibrary
    from molfed.data.shards import ShardSet

__all__ = [
    "Chunk",
    "ChunkResult",
    "cache_file_for",
    "LibrarySpec",
    "featurize_chunk",
    "library_from_parts",
    "plan_chunks",
    "shards_from_parts",
    "write_manifest",
]


@dataclass(frozen=True, slots=True)
class LibrarySpec:
    """How to read and featurize a library (names and options only, no data)."""

    path: Path
    smiles_column: str
    label_columns: tuple[str, ...]
    task_types: tuple[str, ...]
    standardize: StandardizeOptions

    @property
    def structure_column(self) -> str:
        return STRUCTURE_COLUMN_SDF if suffix_of(self.path) == ".sdf" else self.smiles_column


@dataclass(frozen=True, slots=True)
class Chunk:
    """One unit of work: records ``start``..``stop`` (0-based, in file order) of a library whose bytes hash to
    ``digest``, written to ``part``."""

    index: int
    start: int
    stop: int
    digest: str
    part: Path


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What a worker returns: counts and digests only."""

    index: int
    n_rows: int
    n_candidates: int
    reject_counts: dict[str, int]
    part: Path
    part_digest: str
    """SHA-256 of the part file, checked before the partner merges it."""
    worker: str
    """``host:pid`` of the process that ran the chunk."""


def plan_chunks(spec: LibrarySpec, parts_dir: Path, chunk_size: int, *, partner: str | None = None) -> list[Chunk]:
    """Split a library into chunks of ``chunk_size`` records (the file is read once here to count them).

    Raises
    ------
    InputError
        For an unusable library file (as :func:`~molfed.data.library.read_library`).
    ValueError
        If ``chunk_size < 1``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    digest, records = read_records(spec.path, spec.smiles_column, spec.label_columns, partner)
    n = len(records)
    del records
    starts = range(0, n, chunk_size)
    return [Chunk(i, s, min(s + chunk_size, n), digest, parts_dir / f"part-{i:05d}.npz") for i, s in enumerate(starts)]


def featurize_chunk(spec: LibrarySpec, chunk: Chunk) -> ChunkResult:
    """Featurize one chunk's records into ``chunk.part`` (runs on a worker).

    Raises
    ------
    InputError
        If the file is unusable or its bytes no longer hash to ``chunk.digest``.
    """
    digest, records = read_records(spec.path, spec.smiles_column, spec.label_columns, None)
    if digest != chunk.digest:
        raise InputError("library file changed during featurization (digest differs)", path=str(spec.path))
    outcomes = process_chunk(
        records[chunk.start : chunk.stop],
        structure_column=spec.structure_column,
        label_columns=spec.label_columns,
        task_types=spec.task_types,  # type: ignore[arg-type]
        options=spec.standardize,
        featurize=True,
    )
    del records
    kept = [(o, extra) for o, extra in outcomes if isinstance(o, Candidate) and extra is not None]
    rejects = [o for o, _ in outcomes if isinstance(o, Reject)]
    codes = concat_codes(extra[0] for _, extra in kept)
    arrays = {
        **codes._asdict(),
        "rows": np.array([c.row for c, _ in kept], dtype=np.int64),
        "y": np.array([c.labels for c, _ in kept], dtype=np.float64).reshape(len(kept), len(spec.task_types)),
        **_text("scaffolds", [extra[1] for _, extra in kept]),
        **_text("inchikeys", [c.inchikey for c, _ in kept]),
        # canonical SMILES only where InChI failed: the duplicate key falls back to it
        **_text("smiles", ["" if c.inchikey else c.smiles for c, _ in kept]),
        "reject_rows": np.array([r.row for r in rejects], dtype=np.int64),
    }
    for field in ("reason", "column", "detail"):
        arrays |= _text(f"reject_{field}", [getattr(r, field) for r in rejects])
    chunk.part.parent.mkdir(parents=True, exist_ok=True)
    tmp = chunk.part.with_name(f"{chunk.part.name}.tmp{os.getpid()}")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)  # plain arrays: loaded with allow_pickle=False
    tmp.replace(chunk.part)
    counts = dict(sorted(Counter(r.reason for r in rejects).items()))
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return ChunkResult(
        chunk.index, chunk.stop - chunk.start, len(kept), counts, chunk.part, file_digest(chunk.part), worker
    )  # fmt: skip


def _load_part(result: ChunkResult) -> list[Outcome]:
    """A part's rows in row order, as :func:`~molfed.data.library.process_chunk` gives them featurized (no
    molecules: the merge needs keys, labels, codes and scaffolds)."""
    if file_digest(result.part) != result.part_digest:
        raise InputError("featurized part changed after it was written (digest differs)", path=str(result.part))
    with np.load(result.part, allow_pickle=False) as p:
        arrays = {name: p[name] for name in p.files}
    rows, y = arrays["rows"].tolist(), arrays["y"].tolist()
    keys, smiles, scaffolds = (_strings(arrays, name) for name in ("inchikeys", "smiles", "scaffolds"))
    outcomes: list[Outcome] = [
        (Candidate(r, None, s, k, tuple(v)), (codes, scaffold))
        for r, s, k, v, codes, scaffold in zip(rows, smiles, keys, y, _mol_codes(arrays), scaffolds, strict=True)
    ]
    fields = (_strings(arrays, f"reject_{f}") for f in ("reason", "column", "detail"))
    outcomes += [
        (Reject(int(r), *map(str, rest)), None)
        for r, *rest in zip(arrays["reject_rows"].tolist(), *fields, strict=True)
    ]
    return sorted(outcomes, key=lambda o: o[0].row)


def _text(name: str, values: Sequence[str]) -> dict[str, np.ndarray]:
    """Strings as one UTF-8 blob plus lengths (NumPy's fixed-width str arrays would drop trailing NULs)."""
    encoded = [v.encode("utf-8", "surrogatepass") for v in values]
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return {f"{name}.utf8": blob, f"{name}.len": np.array([len(e) for e in encoded], dtype=np.int64)}


def _strings(arrays: dict[str, np.ndarray], name: str) -> list[str]:
    blob, ends = arrays[f"{name}.utf8"].tobytes(), np.cumsum(arrays[f"{name}.len"]).tolist()
    return [blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip([0, *ends][:-1], ends, strict=True)]


def _mol_codes(arrays: dict[str, np.ndarray]) -> Iterator[MolCodes]:
    """Split a part's concatenated codes back into one :class:`MolCodes` per molecule."""
    return split_codes(CodeArrays(*(arrays[name] for name in CodeArrays._fields)))


def _ordered(results: Sequence[ChunkResult]) -> list[ChunkResult]:
    ordered = sorted(results, key=lambda r: r.index)
    if [r.index for r in ordered] != list(range(len(ordered))):
        raise ValueError(f"got chunks {[r.index for r in ordered]}, expected 0..{len(ordered) - 1} once each")
    return ordered


def library_from_parts(
    spec: LibrarySpec,
    results: Sequence[ChunkResult],
    cache_file: Path,
    *,
    digest: str,
    duplicates: str,
    partner: str | None = None,
) -> FeaturizedLibrary:
    """Merge parts as :func:`~molfed.data.library.read_library` merges its chunks and write ``cache_file``.

    Raises
    ------
    InputError
        If no row gave a valid molecule, or a part file was altered.
    """
    from molfed.data import cache

    outcomes = [outcome for result in _ordered(results) for outcome in _load_part(result)]
    candidates = [c for c, _ in outcomes if isinstance(c, Candidate)]
    rejects = [r for r, _ in outcomes if isinstance(r, Reject)]
    extras = {o.row: extra for o, extra in outcomes if extra is not None}
    notes: list[tuple[int, str, str, str]] = []
    kept, dup_rejects, n_merged = resolve_duplicates(
        candidates,
        spec.task_types,
        duplicates,
        label_columns=spec.label_columns,
        structure_column=spec.structure_column,
        notes=notes,
    )
    rejects.extend(Reject(row, reason, col, detail) for row, reason, col, detail in dup_rejects)
    rejects.sort(key=lambda r: r.row)
    n_rows = sum(r.n_rows for r in results)
    if not kept:
        summary = ", ".join(f"{reason}: {n}" for reason, n in sorted(Counter(r.reason for r in rejects).items()))
        message = f"no valid molecules; all {n_rows} rows rejected ({summary})"
        raise InputError(message, path=str(spec.path), partner=partner)
    rejects = sorted(rejects + [Reject(*note) for note in notes], key=lambda r: r.row)  # as read_library's
    return cache.save_featurized(
        cache_file,
        concat_codes(extras[c.row][0] for c in kept),
        np.array([c.labels for c in kept], dtype=np.float32).reshape(len(kept), len(spec.task_types)),
        scaffolds=[extras[c.row][1] for c in kept],
        digest=digest,
        n_input_rows=n_rows,
        n_duplicates_merged=n_merged,
        rejects=rejects,
    )


def shards_from_parts(spec: LibrarySpec, results: Sequence[ChunkResult], out_dir: Path) -> ShardSet:
    """Write ``out_dir/shard-NNNNN.pt`` and ``rejects.csv`` exactly as :func:`~molfed.data.shards.write_shards`
    with the same ``chunk_size`` (first occurrence of a molecule kept, one shard per chunk with molecules)."""
    from molfed.data.shards import ShardChunk, write_shard_chunks

    chunks = (ShardChunk(r.n_rows, _load_part(r)) for r in _ordered(results))
    return write_shard_chunks(chunks, out_dir, n_tasks=len(spec.task_types), structure_column=spec.structure_column)


def cache_file_for(spec: LibrarySpec, workspace: Path, *, digest: str, duplicates: str) -> Path:
    """Where :func:`~molfed.data.cache.featurize_library` looks for this library's graph cache."""
    from molfed.data import cache

    key = cache.cache_key(
        digest,
        smiles_column=spec.smiles_column,
        label_columns=spec.label_columns,
        task_types=spec.task_types,
        standardize=spec.standardize,
        duplicates=duplicates,
    )
    return workspace / "cache" / f"graphs-{key}.pt"


def write_manifest(path: Path, results: Sequence[ChunkResult]) -> Path:
    """Record each chunk's counts, part digest and worker as JSON (no molecules or labels)."""
    rows = [
        {"index": r.index, "n_rows": r.n_rows, "n_candidates": r.n_candidates, "reject_counts": r.reject_counts,
         "part_digest": r.part_digest, "worker": r.worker}
        for r in _ordered(results)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chunks": rows}, indent=1) + "\n", encoding="utf-8")
    return path
