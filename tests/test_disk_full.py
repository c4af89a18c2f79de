"""A full disk: refused at start with the path and the space needed; mid-run, one line with the resume command.

No real disk is filled here (that needs root for a small tmpfs or a loop device): the free space is faked by
patching ``shutil.disk_usage``, and the mid-run failure is an ``OSError(ENOSPC)`` -- and SQLite's "database or
disk is full" wrapped as SQLAlchemy and MLflow wrap it -- raised by a stand-in for the flow, at the boundary where
``molfed run`` calls it. What is tested is the CLI's handling: one line, exit 2, no traceback, the run's log file.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest
import yaml

from molfed import cli, runlog
from molfed.diskspace import MIN_FREE_MB, disk_full

CORPUS = Path(__file__).resolve().parent / "badinput"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def run_config(tmp_path, monkeypatch):
    """A valid one-partner config with its own workspace and SQLite store; the log folder in tmp_path."""
    monkeypatch.setenv("MOLFED_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(runlog, "_path", None)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    raw = {
        "tasks": [{"name": "expt"}],
        "partners": [{"name": "acme", "path": str(CORPUS / "ok.csv"), "workspace": str(tmp_path / "ws")}],
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    root = logging.getLogger()
    before = list(root.handlers)
    yield path
    logging.captureWarnings(False)
    for handler in [h for h in root.handlers if h not in before]:  # route_logging's file handler
        root.removeHandler(handler)
        handler.close()


def fake_flow(monkeypatch, exc: BaseException) -> None:
    """``flows.federated_training.federated_training`` raising ``exc``; no Prefect server, no MLflow run."""
    module = types.ModuleType("flows.federated_training")

    def federated_training(config, resume_run_id=None):
        raise exc

    module.federated_training = federated_training  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flows.federated_training", module)
    monkeypatch.setattr(cli, "_start_prefect_early", lambda verbose: None)
    monkeypatch.setattr(cli, "_latest_run_id", lambda config, started_ms: "0123abcd")


def test_full_disk_at_start_names_the_path_and_the_space_needed(run_config, tmp_path, monkeypatch, capsys):
    real = __import__("shutil").disk_usage

    def usage(path):
        free = 5 * 2**20 if str(path).startswith(str(tmp_path)) else real(path).free
        return Usage(10**12, 0, free)

    monkeypatch.setattr("shutil.disk_usage", usage)
    monkeypatch.setattr(cli, "_start_prefect_early", lambda verbose: pytest.fail("Prefect started"))
    assert cli.main(["run", str(run_config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'ws'} (partners.0.workspace): only 5 MiB free on its disk" in err
    assert f"needs at least {MIN_FREE_MB} MiB there" in err
    assert not (tmp_path / "ws").exists()  # refused before anything was written


@pytest.mark.parametrize("where", ["oserror", "sqlite"])
def test_disk_full_mid_run_is_one_line_with_the_resume_command(run_config, tmp_path, monkeypatch, capsys, where):
    if where == "oserror":
        target = tmp_path / "store" / "artifacts" / "checkpoint" / "round_0003.npz"
        exc: BaseException = OSError(errno.ENOSPC, "No space left on device", str(target))
    else:  # what MLflow raised here: sqlite3's error, kept by SQLAlchemy in .orig, under MLflow's own exception
        target = tmp_path / "store"
        orig = sqlite3.OperationalError("database or disk is full")
        wrapped = RuntimeError("(sqlite3.OperationalError) database or disk is full [SQL: INSERT INTO metrics ...]")
        wrapped.orig = orig  # type: ignore[attr-defined]
        exc = Exception("API request failed")
        exc.__cause__ = wrapped
    fake_flow(monkeypatch, exc)
    assert cli.main(["run", str(run_config)]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    if where == "oserror":
        assert lines[0].startswith(f"molfed: error: disk full: {target} has ")
    else:  # no file named: every write location on the full disk
        assert lines[0].startswith("molfed: error: disk full: the disk holding ")
        assert f"{target} (tracking.tracking_uri)" in lines[0] and f"{tmp_path / 'ws'} (partners.0.workspace)" in err
    assert f"free at least {MIN_FREE_MB} MiB there" in lines[0]
    assert "molfed resume 0123abcd" in lines[0]
    log = next((tmp_path / "logs").glob("run-*.log"))
    assert f"(details: {log})" in lines[0] and "Traceback" in log.read_text()


def test_an_unexpected_error_is_one_line_naming_the_log_with_its_traceback(run_config, tmp_path, monkeypatch, capsys):
    fake_flow(monkeypatch, KeyError("boom"))
    assert cli.main(["run", str(run_config)]) == 1
    err = capsys.readouterr().err
    log = next((tmp_path / "logs").glob("run-*.log"))
    assert err == f"molfed: error: the run failed with an unexpected KeyError; traceback in {log}\n"
    assert "KeyError: 'boom'" in log.read_text()


def test_disk_full_is_recognised_through_wrappers():
    assert disk_full(OSError(errno.ENOSPC, "No space left on device", "/x/y")) == (True, "/x/y")
    outer = ValueError("failed")
    outer.__context__ = sqlite3.OperationalError("database or disk is full")
    assert disk_full(outer) == (True, None)
    assert disk_full(OSError(errno.EACCES, "Permission denied", "/x")) == (False, None)
