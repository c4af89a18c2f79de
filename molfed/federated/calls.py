"""The engine's policy for a wave of partner jobs run in this process: concurrently, each attempt bounded by a
timeout, retried, a job that still fails a :class:`~molfed.federated.types.Failure` (failures are data; the
engine's quorum decides).

A timed-out attempt is interrupted the way Prefect interrupts a task in a thread: an exception raised
asynchronously in its thread, which takes effect at the thread's next Python instruction (a long call into C, e.g.
one large torch kernel, finishes first). Job threads are daemons, so a job stuck in C cannot keep the process alive.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from molfed.federated.types import Failure


class JobTimeout(Exception):
    """Raised inside a job's thread when its attempt ran past the timeout."""


def _always(exc: BaseException) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class CallPolicy:
    retries: int = 0
    """Further attempts after a failed one."""
    timeout_s: float | None = None
    """Seconds one attempt may run (None: no limit)."""
    retry_if: Callable[[BaseException], bool] = field(default=_always)
    """Whether a failure is worth another attempt (user mistakes are not)."""


@dataclass(slots=True)
class _Attempt:
    thread: threading.Thread
    started: float
    result: Any = None
    error: BaseException | None = None


def _interrupt(thread: threading.Thread) -> None:
    """Raise :class:`JobTimeout` in ``thread`` at its next Python instruction."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(JobTimeout))


def _start(name: str, call: Callable[[], Any], before: Callable[[], None] | None) -> _Attempt:
    attempt = _Attempt(threading.Thread(target=lambda: None), time.monotonic())

    def run() -> None:
        try:
            if before is not None:
                before()
            attempt.result = call()
        except BaseException as exc:  # JobTimeout included: reported to the waiting side, never re-raised here
            attempt.error = exc

    attempt.thread = threading.Thread(target=run, name=f"molfed-job-{name}", daemon=True)
    attempt.thread.start()
    return attempt


def call_each(
    calls: Mapping[str, Callable[[], Any]],
    policy: CallPolicy = CallPolicy(),
    *,
    before: Callable[[], None] | None = None,
    errors: dict[str, BaseException] | None = None,
) -> tuple[dict[str, Any], list[Failure]]:
    """Run every call at once, one thread each, under ``policy``; results and failures by name (in ``calls``'
    order). ``before()`` runs first in each job thread (e.g. per-thread torch settings); ``errors`` (if given)
    receives each failed job's last exception."""
    running = {name: _start(name, call, before) for name, call in calls.items()}
    tries = dict.fromkeys(calls, 1)
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    while running:
        for name, attempt in list(running.items()):
            left = None if policy.timeout_s is None else attempt.started + policy.timeout_s - time.monotonic()
            attempt.thread.join(timeout=0.02 if left is None else max(0.0, min(left, 0.02)))
            if attempt.thread.is_alive():
                if left is None or left > 0:
                    continue
                _interrupt(attempt.thread)
                attempt.thread.join(timeout=5.0)  # a thread inside one long C call may take a moment
                attempt.error = JobTimeout(f"timed out after {policy.timeout_s:g} s")
            del running[name]
            if attempt.error is None:
                results[name] = attempt.result
                continue
            error = attempt.error
            if tries[name] <= policy.retries and policy.retry_if(error):
                tries[name] += 1
                running[name] = _start(name, calls[name], before)
                continue
            if errors is not None:
                errors[name] = error
            reason = str(error) if isinstance(error, JobTimeout) else f"{type(error).__name__}: {error}"
            failed[name] = reason if tries[name] == 1 else f"{reason} (after {tries[name]} attempts)"
    order = list(calls)
    return (
        {n: results[n] for n in order if n in results},
        [Failure(n, failed[n]) for n in order if n in failed],
    )
