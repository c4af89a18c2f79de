"""Disk space: refuse to start a run on a (nearly) full disk, and turn "disk full" mid-run into one line.

A run writes to the partners' workspaces (graph caches, rejects reports), to the MLflow store (SQLite database,
checkpoints and models under the artifact root) and to Prefect's home (its SQLite database). When any of them
fills up, SQLite, MLflow and Prefect each raise their own exception, often several layers deep (``OSError`` with
``errno.ENOSPC``, ``sqlite3.OperationalError: database or disk is full``, wrapped by SQLAlchemy and MLflow).
:func:`disk_full` recognises all of them; :func:`disk_full_message` says which path, how much space to free and
how to continue (``molfed resume <run id>``: the last complete round's checkpoint is kept).

No Prefect, no MLflow imports.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from molfed.errors import MolfedError

__all__ = ["MIN_FREE_MB", "check_free_space", "disk_full", "disk_full_message", "free_mb"]

MIN_FREE_MB = 200
"""Free space (MiB) a run wants on every disk it writes to: graph caches, checkpoints (one per round), the model,
and the SQLite databases' journals. A demo-sized run writes a few MiB; this leaves room for larger libraries."""

_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def free_mb(path: Path) -> float:
    """Free MiB on the disk holding ``path`` (or its nearest existing parent)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / 2**20


def _device(path: Path) -> int:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.stat().st_dev


def check_free_space(paths: Mapping[str, Path], need_mb: float = MIN_FREE_MB) -> None:
    """Refuse to start when a disk the run writes to has less than ``need_mb`` MiB free.

    Parameters
    ----------
    paths
        Where the run writes, by what the user would change (a config key or a variable), e.g.
        ``{"partners.0.workspace": Path("ws/a"), "PREFECT_HOME": Path("~/.prefect")}``.

    Raises
    ------
    MolfedError
        ``<path> (<key>): only 12 MiB free on its disk; a run needs at least 200 MiB there: free space or point
        <key> elsewhere``.
    """
    for key, path in paths.items():
        try:
            free = free_mb(path)
        except OSError:
            continue  # unreadable: whatever writes there reports it
        if free < need_mb:
            raise MolfedError(
                f"{path} ({key}): only {free:.0f} MiB free on its disk; a run needs at least {need_mb:.0f} MiB "
                f"there: free space or point {key} elsewhere"
            )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "orig", None)]  # SQLAlchemy keeps the DB's in .orig
        todo += [e for e in getattr(item, "exceptions", ()) if isinstance(e, BaseException)]  # exception groups


def disk_full(exc: BaseException) -> tuple[bool, str | None]:
    """Whether ``exc`` (or anything in its chain) says a disk is full, and the file concerned when it names one."""
    found, filename = False, None
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            found = True
            filename = filename or (os.fsdecode(item.filename) if item.filename else None)
        elif any(text in str(item).lower() for text in _FULL_TEXTS):
            found = True
    return found, filename


def disk_full_message(filename: str | None, candidates: Mapping[str, Path], run_id: str | None) -> str:
    """One line: which path is full, how much to free, and how to continue.

    Without a file name in the exception, the ``candidates`` (the run's write locations) on the fullest disk are
    named.
    """
    if filename is not None:
        where, free = filename, free_mb(Path(filename))
    elif candidates:
        found = {key: (path, free_mb(path), _device(path)) for key, path in candidates.items()}
        fullest = min(found, key=lambda k: found[k][1])
        _, free, device = found[fullest]
        where = ", ".join(f"{path} ({key})" for key, (path, _, dev) in found.items() if dev == device)
        where = f"the disk holding {where}"
    else:
        where, free = "a disk the run writes to", 0.0
    then = f"molfed resume {run_id}" if run_id else "run it again"
    return (
        f"disk full: {where} has {free:.0f} MiB free; free at least {MIN_FREE_MB} MiB there, then continue "
        f"from the last complete round: {then}"
    )
