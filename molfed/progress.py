"""Progress events from long work, for whoever listens (the CLI shows them with rich; default: nobody).

Events carry names and counts only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressListener(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str, detail: str = "") -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, name: str, detail: str = "") -> None:
        return None


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
