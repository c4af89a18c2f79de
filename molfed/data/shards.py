"""Libraries too large for memory: streaming featurization to on-disk shards, and training from the shards.

:func:`write_shards` reads a CSV library ``chunk_size`` rows at a time, runs the same per-row pipeline as
:func:`~molfed.data.library.read_library` (parse, labels, standardize, InChIKey, graph codes, scaffold; over
``workers`` processes) and writes each chunk's kept molecules as one shard of compact codes
(:mod:`molfed.chem.encode`: ~4 bytes per atom, 9 per bond), so memory holds one chunk, not the library.
Duplicates (same InChIKey) across the whole file keep their first row (``keep_first``; the others go to
``rejects.csv`` as ``duplicate``): merging labels would need the whole library at once.

:func:`train_from_shards` trains with one optimizer over all shards, one shard's graphs in memory at a time
(shard order and the order within a shard are shuffled each epoch with a seeded generator).
Shards hold partner data: keep them in the partner's workspace.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfed.chem.encode import CodeArrays, concat_codes
from molfed.chem.featurize import graphs_from_codes
from molfed.chem.standardize import StandardizeOptions
from molfed.data.library import Reject, TaskType, process_chunk
from molfed.data.parallel import map_chunks
from molfed.data.readers import Record
from molfed.errors import InputError
from molfed.models.model import MoleculeModel
from molfed.train.metrics import masked_loss

__all__ = ["ShardSet", "load_shard", "train_from_shards", "write_shards"]

_DEFAULT_STANDARDIZE = StandardizeOptions()


@dataclass(frozen=True, slots=True)
class ShardSet:
    """Shards written by :func:`write_shards`."""

    paths: tuple[Path, ...]
    n_molecules: int
    n_input_rows: int
    n_rejected: int


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

    Also writes ``out_dir/rejects.csv``. Raises :class:`~molfed.errors.InputError` for an unusable file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = partial(
        process_chunk,
        structure_column=smiles_column,
        label_columns=tuple(label_columns),
        task_types=tuple(task_types),
        options=standardize,
        featurize=True,
    )
    seen: set[str] = set()
    paths: list[Path] = []
    n_rows = n_kept = n_rejected = 0
    with (out / "rejects.csv").open("w", newline="", encoding="utf-8") as report:
        writer = csv.writer(report, lineterminator="\n")
        writer.writerow(("row", "column", "reason", "detail"))
        for records in _csv_chunks(Path(path), smiles_column, label_columns, chunk_size):
            n_rows += len(records)
            codes, labels, scaffolds, rejects = [], [], [], []
            for outcomes in map_chunks(work, records, workers, preload=["molfed.data.library"]):
                for outcome, extra in outcomes:
                    if isinstance(outcome, Reject):
                        rejects.append(outcome)
                    elif (key := outcome.inchikey or f"smiles:{outcome.smiles}") in seen:
                        rejects.append(
                            Reject(outcome.row, "duplicate", smiles_column, "same molecule as an earlier row")
                        )
                    else:
                        seen.add(key)
                        assert extra is not None
                        codes.append(extra[0])
                        scaffolds.append(extra[1])
                        labels.append(outcome.labels)
            writer.writerows((r.row, r.column, r.reason, r.detail) for r in rejects)
            n_rejected += len(rejects)
            if codes:
                paths.append(out / f"shard-{len(paths):05d}.pt")
                y = np.asarray(labels, dtype=np.float32).reshape(len(codes), len(label_columns))
                _save_shard(paths[-1], concat_codes(codes), y, scaffolds)
                n_kept += len(codes)
    return ShardSet(tuple(paths), n_kept, n_rows, n_rejected)


def _save_shard(path: Path, codes: CodeArrays, y: np.ndarray, scaffolds: list[str]) -> None:
    payload = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in codes._asdict().items()}
    torch.save({**payload, "y": torch.from_numpy(y), "scaffolds": "\n".join(scaffolds)}, path)


def load_shard(path: Path) -> tuple[Data, ...]:
    """One shard's graphs (with ``y``)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    codes = CodeArrays(**{name: payload[name].numpy() for name in CodeArrays._fields})
    return graphs_from_codes(codes, payload["y"].numpy())


def train_from_shards(
    model: MoleculeModel,
    shards: Sequence[Path],
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Train ``model`` in place with Adam over every shard, one shard in memory at a time.

    Returns
    -------
    float
        Mean masked loss over the last epoch (standardized units).
    """
    if not shards:
        raise ValueError("train_from_shards: got 0 shards, expected at least 1")
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        total, count = 0.0, 0
        for i in torch.randperm(len(shards), generator=generator).tolist():
            loader = DataLoader(list(load_shard(shards[i])), batch_size=batch_size, shuffle=True, generator=generator)
            for batch in loader:
                batch = batch.to(device)
                loss = masked_loss(model.forward_batch(batch), model.scale_targets(batch.y), model.is_classification)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * batch.num_graphs
                count += batch.num_graphs
    return total / max(count, 1)
