"""The log file of a ``molfed run`` / ``demo`` / ``resume``: what is not for the console goes there.

Without ``-v`` the console shows progress, the results, or one ``molfed: error: ...`` line; Prefect's and MLflow's
log records (flow- and task-run logs, their tracebacks, warnings), the temporary Prefect server's own output and
the traceback of an unexpected error go to ``$MOLFED_LOG_DIR/run-<YYYYmmdd-HHMMSS>-<pid>.log`` (default folder
``./molfed-logs``), whose path the error line names. The file is created on first use: a run refused before Prefect
starts leaves none. It holds what Prefect's database holds anyway (no partner data: see molfed/errors.py).

If the folder cannot be written (e.g. the disk is full) the records are dropped rather than raising.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

__all__ = ["LOG_DIR_VARIABLE", "log_path", "open_for_subprocess", "route_logging", "used", "write_traceback"]

LOG_DIR_VARIABLE = "MOLFED_LOG_DIR"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_path: Path | None = None


def log_path() -> Path | None:
    """This process's log file (its folder created); None if the folder cannot be created."""
    global _path
    if _path is None:
        folder = Path(os.environ.get(LOG_DIR_VARIABLE, "molfed-logs")).absolute()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        _path = folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    return _path


def used() -> Path | None:
    """The log file if anything was written to it, else None."""
    path = _path
    try:
        return path if path is not None and path.stat().st_size > 0 else None
    except OSError:
        return None


def open_for_subprocess() -> IO[bytes] | None:
    """The log file opened for appending, for a child process's stdout and stderr (None: keep the console)."""
    path = log_path()
    if path is None:
        return None
    try:
        handle = path.open("ab")
    except OSError:
        return None
    atexit.register(_remove_if_empty)  # registered before the server's stop, so it runs after it
    return handle


def _remove_if_empty() -> None:
    """At exit: a log nothing was written to is not left behind."""
    path = _path
    with contextlib.suppress(OSError):
        if path is not None and path.stat().st_size == 0:
            path.unlink()


def route_logging() -> None:
    """Send every configured logger's console output to the log file (call after Prefect and MLflow configured
    their logging, i.e. after importing them): console handlers are muted, a file handler takes their place."""
    path = log_path()
    logging.raiseExceptions = False  # a full disk must not print "--- Logging error ---" tracebacks
    handler: logging.Handler = logging.FileHandler(path, delay=True) if path else logging.NullHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        muted = False
        for existing in logger.handlers:
            if _is_console(existing):
                existing.setLevel(logging.CRITICAL + 1)
                muted = True
        if logger is logging.getLogger() or (muted and not logger.propagate):
            logger.addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn(...) -> logger "py.warnings" -> root -> the file


def _is_console(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler):
        return False
    stream = getattr(handler, "stream", None)
    return stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) or "Console" in type(handler).__name__


def write_traceback(exc: BaseException) -> Path | None:
    """Append ``exc``'s traceback to the log file; its path, or None if it could not be written."""
    path = log_path()
    if path is None:
        return None
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} molfed: unexpected error\n")
            handle.writelines(traceback.format_exception(exc))
    except OSError:
        return None
    return path
