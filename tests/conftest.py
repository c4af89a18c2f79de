"""Test-wide environment: a private PREFECT_HOME (so the privacy scan sees exactly what this session stored),
no telemetry, a generous ephemeral-server start-up timeout. Set before anything imports prefect.

The private PREFECT_HOME starts from ``molfed init``'s migrated template database when there is one (``make setup``
builds it), as ``molfed run`` does: Prefect's migrations are ~13 CPU-s per new database.

Every Python process the suite starts imports ``tests/_boot/sitecustomize.py`` first (via ``PYTHONPATH``), which
defers ``rfc3987_syntax``'s ~3 s import as ``molfed run`` does; this process does the same here.
"""

import os
import tempfile
from pathlib import Path

from molfed.startup import lazy_optional_imports, seed_prefect_database

lazy_optional_imports()

_BOOT = str(Path(__file__).resolve().parent / "_boot")
_PREFECT_HOME = tempfile.mkdtemp(prefix="molfed-test-prefect-")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_BOOT, os.environ.get("PYTHONPATH")) if p)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("MOLFED_LOG_DIR", tempfile.mkdtemp(prefix="molfed-test-logs-"))  # not ./molfed-logs
seed_prefect_database(Path(_PREFECT_HOME))
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL"] = "WARNING"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def prefect_home() -> str:
    return _PREFECT_HOME
