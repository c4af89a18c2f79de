"""molfed.runlog: without -v, what Prefect and MLflow log goes to the run's log file, not to the console."""

from __future__ import annotations

import logging
import sys
import warnings

from molfed import runlog


def test_console_handlers_are_muted_and_records_reach_the_log_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(runlog.LOG_DIR_VARIABLE, str(tmp_path / "logs"))
    monkeypatch.setattr(runlog, "_path", None)
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)  # as Prefect's logging config installs on the root logger
    private = logging.getLogger("prefect._internal.test")
    private.propagate = False
    private_console = logging.StreamHandler(sys.stderr)
    private.addHandler(private_console)
    root.addHandler(console)
    before = list(root.handlers)
    try:
        assert runlog.used() is None  # nothing written yet: no file named
        runlog.route_logging()
        logging.getLogger("prefect.task_runs").error("Task run failed: Traceback ...")
        private.error("internal detail")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library warning", UserWarning, stacklevel=1)
        for handler in root.handlers:
            handler.flush()
        assert capsys.readouterr().err == ""
        log = runlog.used()
        assert log is not None and log.parent == tmp_path / "logs" and log.name.startswith("run-")
        text = log.read_text()
        assert "Task run failed" in text and "internal detail" in text and "a library warning" in text
    finally:
        logging.captureWarnings(False)
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
        root.removeHandler(console)
        private.handlers.clear()
        private.propagate = True
