"""map_chunks: row order kept, this process works too, errors surface, one worker starts no pool."""

from __future__ import annotations

import os

import pytest

from molfed.data.parallel import chunk_size, map_chunks


def tag(chunk):
    """Module-level (picklable): the chunk's items with the pid of the process that handled them."""
    return [(item, os.getpid()) for item in chunk]


def fail_on_13(chunk):
    if 13 in chunk:
        raise KeyError("row 13")
    return list(chunk)


def test_one_worker_runs_here_without_a_pool():
    (out,) = list(map_chunks(tag, list(range(500)), 1))
    assert [i for i, _ in out] == list(range(500))
    assert {pid for _, pid in out} == {os.getpid()}


PRELOAD = ["molfed.data.library"]  # as in production: workers start with RDKit imported (shared by the tests)


def test_parallel_keeps_order_and_covers_every_item_once():
    items, workers = list(range(1000)), 3
    results = list(map_chunks(tag, items, workers, min_chunk=16, preload=PRELOAD))
    flat = [pair for chunk in results for pair in chunk]
    assert [i for i, _ in flat] == items
    assert len(results) > 2
    # this process takes its share from the back; the pool never exceeds workers - 1 processes
    assert flat[-1][1] == os.getpid()
    assert len({pid for _, pid in flat}) <= workers


def test_worker_error_is_raised_after_shutdown():
    with pytest.raises(KeyError, match="row 13"):
        list(map_chunks(fail_on_13, list(range(400)), 2, min_chunk=16, preload=PRELOAD))


def test_bad_workers_and_chunk_sizes():
    with pytest.raises(ValueError, match="workers must be >= 1; got 0"):
        list(map_chunks(tag, [1, 2], 0))
    assert chunk_size(100, 2) == 32  # never below min_chunk
    assert chunk_size(10**6, 2) == 1024  # never above max_chunk
    assert chunk_size(8000, 2) == 125  # about 32 chunks per process
