"""What the terminal shows: one plain progress line per round in a log, commands one per line with absolute paths."""

from __future__ import annotations

import io
import re

from molfed import progress
from molfed.progress import LineListener, listening


def test_one_line_per_round_with_elapsed_and_eta():
    now = [100.0]
    out = io.StringIO()
    listener = LineListener(out, clock=lambda: now[0])
    with listening(listener):
        progress.stage("rounds", 4)
        for r in (1, 2):
            now[0] += 15.0
            progress.advance("rounds", f"round {r}: train loss 0.5{r}0")
        progress.advance("partners", "3 partners ready")  # not a stage: one line, no ETA
    lines = out.getvalue().splitlines()
    assert lines == [
        "rounds 1/4: round 1: train loss 0.510 | elapsed 15 s, ETA 45 s",
        "rounds 2/4: round 2: train loss 0.520 | elapsed 30 s, ETA 30 s",
        "partners: 3 partners ready",
    ]


def test_long_durations_read_as_minutes_and_hours():
    now = [0.0]
    out = io.StringIO()
    listener = LineListener(out, clock=lambda: now[0])
    listener.stage("rounds", 3)
    now[0] = 125.0
    listener.advance("rounds")
    assert out.getvalue().strip() == "rounds 1/3 | elapsed 2 min 05 s, ETA 4 min 10 s"


def _commands(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.startswith("  ")]


def test_ui_hints_are_whole_commands_with_absolute_paths(tmp_path, monkeypatch):
    from molfed.cli import ui_hints

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    lines = ui_hints(uri, "1", "abc")
    command = _commands(lines)[0]
    assert f"PREFECT_HOME={tmp_path / 'home'} " in command
    assert re.search(r" /\S+/molfed ui --tracking-uri sqlite:////", command), command
    assert _commands(lines)[1] == "http://127.0.0.1:5000/#/experiments/1/runs/abc"


def test_deploy_prints_what_to_start_next(tmp_path, monkeypatch):
    from flows.deploy import deployed_config, form_parameters
    from molfed.cli import next_steps
    from molfed.config import RunConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = RunConfig(tasks=[{"name": "y"}], partners=[{"name": "a", "path": str(tmp_path / "a.csv")}])
    config = deployed_config(config)
    assert config.tracking.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    assert config.partners[0].workspace == tmp_path.resolve() / "workspaces" / "a"
    assert "parent_run_id" not in form_parameters(config)["config"]["tracking"]
    lines = next_steps(config, "http://127.0.0.1:4200/api")
    commands = _commands(lines)
    agent = next(c for c in commands if c.endswith(" coordinator-agent"))
    assert agent.startswith(f"cd {tmp_path} && PREFECT_API_URL=http://127.0.0.1:4200/api /")
    assert "http://127.0.0.1:4200/deployments" in commands
    assert not any("serve" in line for line in lines)
    sites = RunConfig(
        mode="sites", tasks=[{"name": "y"}], partners=[{"name": "a"}, {"name": "b"}], baselines={"pooled": False}
    )
    agents = [c for c in _commands(next_steps(deployed_config(sites), "http://h:4200/api")) if "site-agent" in c]
    assert len(agents) == 2 and all("MLFLOW_TRACKING_URI=sqlite:////" in c for c in agents)


def test_deploy_help_documents_every_option(capsys):
    import pytest

    from molfed.cli import main

    with pytest.raises(SystemExit):
        main(["deploy", "--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--set"):
        line = next(line for line in text.splitlines() if line.strip().startswith(option))
        assert len(line.split()) > 2 or option == "--set", line
    prose = " ".join(text.split())
    assert "coordinator agent" in prose and "absolute" in prose


def test_python_dash_m_reaches_every_command(tmp_path):
    """``python -m molfed.cli`` ran main() from the middle of the module: commands defined below it (keygen) failed
    with a NameError traceback."""
    import subprocess
    import sys

    key = tmp_path / "coordinator.pem"
    out = subprocess.run(
        [sys.executable, "-m", "molfed.cli", "keygen", "--coordinator-key", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and key.exists(), out.stderr[-500:]
    assert "Traceback" not in out.stderr
