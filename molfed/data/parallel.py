"""Order-preserving parallel map over chunks of a list (for per-molecule RDKit work).

The calling process is one of the workers: with ``workers = n`` it works through chunks from the back of the list
while ``n - 1`` pool processes take chunks from the front, until none are left. So the pool's start-up (a
``forkserver`` importing RDKit, about a second) overlaps useful work instead of delaying it, one process fewer is
started, and only the pool's share of the results is pickled back.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["chunk_size", "map_chunks"]

T = TypeVar("T")
R = TypeVar("R")

CHUNKS_PER_WORKER = 32
"""About this many chunks per process: the processes finish at most one chunk apart, so small chunks keep the
tail short (a chunk's fixed cost is one round trip to a pool process, well under a millisecond)."""


def chunk_size(n_items: int, workers: int, *, min_chunk: int = 32, max_chunk: int = 1024) -> int:
    """Items per chunk for ``n_items`` over ``workers`` processes (``min_chunk``..``max_chunk``)."""
    return max(min_chunk, min(max_chunk, -(-n_items // (CHUNKS_PER_WORKER * workers))))


def map_chunks(
    work: Callable[[Sequence[T]], R],
    items: Sequence[T],
    workers: int,
    *,
    min_chunk: int = 32,
    max_chunk: int = 1024,
    preload: Sequence[str] = (),
) -> Iterator[R]:
    """``work`` over consecutive chunks of ``items``, results in chunk order.

    With ``workers == 1`` (or too few items to split) ``work`` runs once, in this process, on all items, and no
    pool is started. Otherwise this process and a pool of ``workers - 1`` processes share chunks of
    ``min_chunk``..``max_chunk`` items (:func:`chunk_size`). Pool processes are forked from a ``forkserver`` --
    started once per process, with the ``preload`` modules imported -- never from this process, whose threads
    (Prefect, torch, other partners) a plain fork would copy mid-flight. ``work`` must be picklable (a
    module-level function or a ``functools.partial`` of one) and its result too.

    Raises
    ------
    ValueError
        If ``workers < 1``.
    Exception
        The first exception raised by ``work`` (after the pool is shut down).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if workers == 1 or len(items) < 2 * min_chunk:
        yield work(items)
        return
    size = chunk_size(len(items), workers, min_chunk=min_chunk, max_chunk=max_chunk)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    yield from _share(work, chunks, min(workers, len(chunks)) - 1, preload)


def _share(work: Callable[[Sequence[T]], R], chunks: list[Sequence[T]], n_pool: int, preload: Sequence[str]) -> list[R]:
    """Run ``work`` on every chunk: this process from the back, ``n_pool`` pool processes from the front."""
    results: list[R | None] = [None] * len(chunks)
    todo = deque(range(len(chunks)))  # popleft/pop are atomic: the feeders and this thread share it safely
    errors: list[BaseException] = []
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *preload])
    pool = ProcessPoolExecutor(max_workers=n_pool, mp_context=context)

    def feed() -> None:  # keeps one pool process busy; its first submit waits for the forkserver, not this thread
        try:
            while not errors:
                try:
                    index = todo.popleft()
                except IndexError:
                    return
                results[index] = pool.submit(work, chunks[index]).result()
        except BaseException as exc:  # noqa: BLE001 -- handed to the calling thread, which re-raises it
            errors.append(exc)
            todo.clear()

    feeders: list[threading.Thread] = []
    try:
        for i in range(n_pool):
            feeders.append(threading.Thread(target=feed, name=f"molfed-feed-{i}", daemon=True))
            feeders[-1].start()
        while not errors:
            try:
                index = todo.pop()
            except IndexError:
                break
            results[index] = work(chunks[index])
    except BaseException:
        todo.clear()
        raise
    finally:
        for feeder in feeders:
            feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
