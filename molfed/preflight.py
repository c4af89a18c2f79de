"""What ``molfed run`` checks before Prefect or MLflow start anything, so that ordinary bad input ends in one line.

A config error, an unreadable library, a library without one usable molecule, two partners sharing one library,
or a disk too full to start all surface here as a :class:`~molfed.errors.MolfedError` (one line, exit 2), before
the Prefect server starts: no flow-run tracebacks, nothing to stop.

Each partner's library is featurized into its workspace's graph cache exactly as the flow's partner task does it
(:func:`~molfed.data.cache.featurize_library`, same cache key), so the flow then loads the cache instead of doing
the work twice. A partner whose featurization runs on a Dask cluster (``partners[i].dask``) is only read here
(file, columns, rows), not featurized: that is the cluster's work.

This module imports neither Prefect nor MLflow.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from molfed.diskspace import MIN_FREE_MB, check_free_space
from molfed.errors import ConfigError, InputError, MolfedError

if TYPE_CHECKING:
    from molfed.config import PartnerConfig, RunConfig

__all__ = ["check_device", "check_distinct_libraries", "check_libraries", "check_run"]

logger = logging.getLogger(__name__)


def check_run(config: RunConfig) -> None:
    """Everything ``molfed run`` can check about ``config`` without Prefect or MLflow.

    Raises
    ------
    MolfedError
        The first problem found, as one line naming the config key, file, row or column.
    """
    if config.mode != "local":
        return
    check_device(config.device)
    check_free_space(write_locations(config))
    check_distinct_libraries(config)
    check_libraries(config)


def write_locations(config: RunConfig) -> dict[str, Path]:
    """Where a run writes, by the config key or variable that moves it: the partners' workspaces (local mode), the
    MLflow store's folder (a local SQLite store or ./mlruns; none for a server) and ``PREFECT_HOME``."""
    import os

    from molfed.startup import prefect_home

    places: dict[str, Path] = {}
    if config.mode == "local":
        places |= {f"partners.{i}.workspace": config.workspace_for(p) for i, p in enumerate(config.partners)}
    uri = config.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri.startswith("sqlite:///"):
        places["tracking.tracking_uri"] = Path(uri.removeprefix("sqlite:///")).parent
    elif not uri:
        places["tracking.tracking_uri"] = Path.cwd() / "mlruns"
    if not any(k in os.environ for k in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")):
        places["PREFECT_HOME"] = prefect_home()
    return places


def check_device(device: str) -> None:
    """Refuse ``device: cuda`` on a machine without CUDA (local mode: the partners train here).

    The same rule as :func:`molfed.federated.partner.resolve_device`, without importing the federation's modules.

    Raises
    ------
    ConfigError
        If ``cuda`` is requested but not available.
    """
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: got 'cuda', but no CUDA device is available; use 'auto' or 'cpu'")


def check_libraries(config: RunConfig) -> None:
    """Read (and, unless it uses Dask, featurize into its graph cache) each partner's library, as the flow will.

    Raises
    ------
    InputError
        An unusable library (see :func:`~molfed.data.library.read_library`).
    """
    from molfed.chem.standardize import StandardizeOptions
    from molfed.data.cache import featurize_library
    from molfed.data.readers import read_records

    options = StandardizeOptions(**config.data.standardize.model_dump())
    for partner in config.partners:
        assert partner.path is not None  # required in local mode
        columns, types = label_columns(config, partner)
        if partner.dask is not None:
            read_records(partner.path, partner.smiles_column, tuple(columns), partner.name)
            continue
        workspace = config.workspace_for(partner)
        try:
            featurize_library(
                partner.path,
                workspace,
                smiles_column=partner.smiles_column,
                label_columns=columns,
                task_types=types,
                standardize=options,
                duplicates=config.data.duplicates,
                partner=partner.name,
                workers=config.data.workers,
            )
        except OSError as exc:  # writing the graph cache
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            why = f"the disk is full; free at least {MIN_FREE_MB} MiB there" if full else type(exc).__name__
            raise InputError(
                f"cannot write the graph cache ({why})", path=str(workspace), partner=partner.name
            ) from None


def label_columns(config: RunConfig, partner: PartnerConfig) -> tuple[list[str], list[str]]:
    """The label columns a partner's library is read with, and their task types: the shared tasks it has, then its
    private tasks (the order of the flow's partner task, so the graph cache key is the same)."""
    shared = [t for t in config.tasks if partner.has_shared(t.name)]
    columns = [partner.column_for(t.name) for t in shared] + [t.label_column for t in partner.private_tasks]
    types: list[str] = [t.type for t in shared]
    types += [t.type for t in partner.private_tasks]
    return columns, types


def check_distinct_libraries(config: RunConfig) -> None:
    """Refuse two partners reading the same library: the same file (also through links) or identical bytes.

    One library counted twice is one partner's data weighted double, and a federation of one pretending to be two.
    Files are compared by resolved path first, then by SHA-256 of their contents.

    Raises
    ------
    ConfigError
        ``partners.1.path: partners 'a' (partners.0.path) and 'b' read the same library ...``.
    MolfedError
        A library that cannot be read.
    """
    seen_paths: dict[Path, int] = {}
    seen_digests: dict[str, int] = {}
    names = [p.name for p in config.partners]
    for i, partner in enumerate(config.partners):
        if partner.path is None:
            continue
        try:
            real = partner.path.resolve(strict=True)  # the config resolved it; a link loop is refused there
        except (OSError, RuntimeError):
            continue  # missing or unreadable: reading the library reports it with the file name
        if not real.is_file():
            continue  # missing or a directory: reading the library reports it with the file name
        if real in seen_paths:
            j = seen_paths[real]
            raise ConfigError(
                f"partners.{i}.path: partners {names[j]!r} (partners.{j}.path) and {partner.name!r} read the same "
                f"file {real}; give each partner its own library"
            )
        seen_paths[real] = i
        digest = _digest(real, partner.name)
        if digest in seen_digests:
            j = seen_digests[digest]
            raise ConfigError(
                f"partners.{i}.path: partners {names[j]!r} (partners.{j}.path) and {partner.name!r} have libraries "
                f"with identical contents (SHA-256 {digest[:12]}...); give each partner its own library"
            )
        seen_digests[digest] = i


def _digest(path: Path, partner: str) -> str:
    sha = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
    except OSError as exc:
        raise MolfedError(f"partner {partner!r}: {path}: cannot read file ({type(exc).__name__})") from None
    return sha.hexdigest()
