"""Order-preserving process-pool map over chunks of a list (for per-molecule RDKit work)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["map_chunks"]

T = TypeVar("T")
R = TypeVar("R")


def map_chunks(
    work: Callable[[Sequence[T]], R],
    items: Sequence[T],
    workers: int,
    *,
    min_chunk: int = 64,
    max_chunk: int = 2048,
    preload: Sequence[str] = (),
) -> Iterator[R]:
    """``work`` over consecutive chunks of ``items``, results in chunk order.

    With ``workers == 1`` (or too few items to split) ``work`` runs once, in this process, on all items. Otherwise
    chunks of ``min_chunk``..``max_chunk`` items (about 4 per worker) go to a pool of ``workers`` processes forked
    from a ``forkserver`` -- started once per process, with the ``preload`` modules imported -- never from this
    process, whose threads (Prefect, torch, other partners) a plain fork would copy mid-flight. ``work`` must be
    picklable (a module-level function or a ``functools.partial`` of one).

    Raises
    ------
    ValueError
        If ``workers < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if workers == 1 or len(items) < 2 * min_chunk:
        yield work(items)
        return
    size = max(min_chunk, min(max_chunk, -(-len(items) // (4 * workers))))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *preload])
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        yield from pool.map(work, chunks)
