"""A real Prefect server with basic auth on a loopback port for the attack tests (stopped afterwards, also on
failure); the adversary holds its one shared credential, as every partner and the coordinator do."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from molfed.startup import seed_prefect_database

BIN = Path(sys.executable).parent
AUTH = "molfed:shared-prefect-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    request = urllib.request.Request(
        url, headers={"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real Prefect server with basic auth on a loopback port, stopped afterwards (also on failure)."""
    home = tmp_path_factory.mktemp("prefect-server")
    seed_prefect_database(home)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_AUTH_STRING=AUTH,
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(f"{api}/health"):
            assert proc.poll() is None, (home / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prefect server did not start"
            time.sleep(0.5)
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: AUTH}):
            yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
