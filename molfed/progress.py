"""Progress events from long work, for whoever listens (the CLI shows them with rich; default: nobody).

Events carry names and counts only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Protocol


class ProgressListener(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str, detail: str = "") -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, name: str, detail: str = "") -> None:
        return None


class LineListener:
    """One plain line per step, for logs (output that is not a terminal): the stage, its step of total, the step's
    detail, time since the stage began and an estimate of the time left, e.g.
    ``rounds 3/10: round 3: train loss 0.512 | elapsed 12 s, ETA 28 s``."""

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.stages: dict[str, tuple[int, int, float]] = {}  # name -> (done, total, started)

    def stage(self, name: str, total: int) -> None:
        self.stages[name] = (0, total, self.clock())

    def advance(self, name: str, detail: str = "") -> None:
        if name not in self.stages:
            self._print(f"{name}: {detail}" if detail else name)
            return
        done, total, started = self.stages[name]
        done += 1
        self.stages[name] = (done, total, started)
        elapsed = self.clock() - started
        left = elapsed / done * max(total - done, 0)
        text = f"{name} {done}/{total}" + (f": {detail}" if detail else "")
        self._print(f"{text} | elapsed {_duration(elapsed)}, ETA {_duration(left)}")

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()  # a log file shows it now, not at exit


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


_listener: ProgressListener = _Silent()


def stage(name: str, total: int) -> None:
    """Announce a stage of ``total`` steps (e.g. ``"rounds"``, 10)."""
    _listener.stage(name, total)


def advance(name: str, detail: str = "") -> None:
    """One step of stage ``name`` is done."""
    _listener.advance(name, detail)


@contextmanager
def listening(listener: ProgressListener) -> Iterator[None]:
    """Route progress events to ``listener`` inside the block."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous
