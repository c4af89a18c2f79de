"""``molfed run`` as a user starts it: a fresh process and no Prefect settings, so molfed starts Prefect's temporary API
server itself at CLI entry (``molfed/startup.py``, which mirrors Prefect's own ephemeral launch: a Prefect upgrade
that breaks it fails here). One 1-round federation of the demo partners on a fresh ``PREFECT_HOME``; the early server
must have served the flow run and be gone when the command returns.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from molfed.data.demo import partner_overrides, write_demo_partners
from molfed.startup import _SETTINGS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EARLY_SERVER = b"from molfed.startup import serve"


def early_servers(home: Path) -> set[int]:
    """Pids of molfed's early Prefect servers whose PREFECT_HOME is ``home``."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            ours = f"PREFECT_HOME={home}".encode()
            if (
                proc.name.isdigit()
                and EARLY_SERVER in (proc / "cmdline").read_bytes()
                and ours in (proc / "environ").read_bytes().split(b"\0")
            ):
                found.add(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find the server process")
def test_molfed_run_starts_and_stops_its_own_prefect_server(tmp_path):
    paths = write_demo_partners(tmp_path / "data", seed=0)
    home = tmp_path / "prefect-home"
    sets = [
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=cli-run",
        "tracking.registered_model=cli-run",
        "federation.rounds=1",
        "train.epochs=1",
        "model.hidden_channels=16",
        "baselines.local_only=false",
        "baselines.pooled=false",
    ]
    sets += partner_overrides(paths, tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if k not in (*_SETTINGS, "PREFECT_PROFILE")}
    env["PREFECT_HOME"] = str(home)
    args = [sys.executable, "-m", "molfed.cli", "run", str(REPO / "configs" / "demo.yaml")]
    args += [x for s in sets for x in ("--set", s)]
    seen: set[int] = set()
    with (tmp_path / "out.log").open("w") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                seen |= early_servers(home)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    output = (tmp_path / "out.log").read_text()
    assert proc.returncode == 0, output[-4000:]
    assert seen, "molfed run did not start its own Prefect server"
    deadline = time.monotonic() + 10  # the server is terminated at exit; allow its shutdown to finish
    while early_servers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not early_servers(home), "the early Prefect server outlived molfed run"
    with sqlite3.connect(home / "prefect.db") as db:  # the early server kept Prefect's database in PREFECT_HOME
        states = db.execute("SELECT state_type FROM flow_run").fetchall()
    assert states and {s for (s,) in states} == {"COMPLETED"}
