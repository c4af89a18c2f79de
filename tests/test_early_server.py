"""molfed's early Prefect server: it dies with the process that started it, and two first starts in one fresh
``PREFECT_HOME`` both come up cleanly (real servers, real processes; each test stops every server it started)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "badinput"
EARLY_SERVER = b"from molfed.startup import serve"

pytestmark = pytest.mark.slow


def early_servers(home: Path) -> dict[int, int]:
    """Pid -> port of molfed's early Prefect servers whose PREFECT_HOME is ``home``."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if (
                proc.name.isdigit()
                and EARLY_SERVER in cmdline
                and f"PREFECT_HOME={home}".encode() in (proc / "environ").read_bytes().split(b"\0")
            ):
                args = cmdline.split(b"\0")
                found[int(proc.name)] = int(args[args.index(b"--port") + 1])
        except (OSError, ValueError):  # gone, not ours to read, or no port yet
            continue
    return found


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "home"),
        MOLFED_LOG_DIR=str(tmp_path / "logs"),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    return env


def kill_all(home: Path) -> None:
    for pid in early_servers(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_server_exits_when_molfed_run_is_killed(tmp_path):
    """SIGKILL ``molfed run`` once its server answers: the server must be gone within a few seconds."""
    raw = {
        "tasks": [{"name": "expt"}],
        "partners": [
            {"name": "acme", "path": str(CORPUS / "ok.csv"), "workspace": str(tmp_path / "ws" / "acme")},
            {"name": "bravo", "path": str(CORPUS / "crlf_and_bom.csv"), "workspace": str(tmp_path / "ws" / "b")},
        ],
        "federation": {"rounds": 1},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    home = tmp_path / "home"
    run = subprocess.Popen(
        [sys.executable, "-m", "molfed.cli", "run", str(config)],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        servers: dict[int, int] = {}
        while time.monotonic() < deadline and run.poll() is None:
            servers = early_servers(home)
            if servers and all(answers(port) for port in servers.values()):
                break
            time.sleep(0.2)
        assert servers and run.poll() is None, "the run's server never answered"
        run.kill()  # SIGKILL: no atexit, no finally in molfed
        run.wait()
        deadline = time.monotonic() + 10
        while early_servers(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not early_servers(home), "the server outlived the molfed process that started it"
    finally:
        run.kill()
        kill_all(home)


START = textwrap.dedent(
    """
    import sys
    from molfed.cli import prefect_environment
    prefect_environment()
    from molfed.startup import EarlyServer
    server = EarlyServer.start_if_ephemeral(output=open(sys.argv[1], "ab"))
    try:
        server.wait()
        print("up", server.port, flush=True)
    finally:
        server.stop()
    """
)


def test_two_first_starts_in_one_fresh_home_both_succeed(tmp_path):
    """Two processes start a server in the same new PREFECT_HOME at once. Both must answer, and neither server may
    fail while registering Prefect's block types in the shared new database (before: UNIQUE-constraint tracebacks
    on every try here, and at worst a failed start reported as 'port taken')."""
    env = environment(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START, str(tmp_path / f"server{i}.log")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        results = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
        kill_all(tmp_path / "home")
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.startswith("up "), err[-2000:]
    for i in range(2):
        log = (tmp_path / f"server{i}.log").read_text(errors="replace")
        assert "Traceback" not in log and "IntegrityError" not in log, log[-3000:]
