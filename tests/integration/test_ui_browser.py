"""The chemist's first hour, end to end on loopback: ``molfed ui`` starts Prefect's and MLflow's UIs on this project's
stores; a small demo run and ``molfed deploy`` write into them; a real browser (Debian's headless chromium, driven by
selenium) opens the deployment's run form and MLflow's Compare page of the run's child runs and fails on an error
page; Ctrl-C (SIGINT) stops both servers.

The servers are ``molfed ui``'s children: whatever happens, the fixture stops ``molfed ui`` (SIGINT, then SIGKILL of
its process group; the servers die with it, PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from molfed.data.demo import partner_overrides, write_demo_partners
from molfed.startup import _SETTINGS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ERROR_TEXTS = ("Something went wrong", "TypeError", "Page not found", "404", "Unexpected error")


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    env = {k: v for k, v in os.environ.items() if k not in (*_SETTINGS, "PREFECT_PROFILE", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_HOME=str(root / ".prefect"), MOLFED_LOG_DIR=str(root / "logs"), PYTHONUNBUFFERED="1")
    prefect_port, mlflow_port = _free_port(), _free_port()
    args = [sys.executable, "-m", "molfed.cli", "ui", "--prefect-port", str(prefect_port)]
    args += ["--mlflow-port", str(mlflow_port)]
    out = (root / "ui.out").open("w")
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    info = {
        "root": root,
        "env": env,
        "proc": proc,
        "prefect": f"http://127.0.0.1:{prefect_port}",
        "mlflow": f"http://127.0.0.1:{mlflow_port}",
    }
    try:
        deadline = time.monotonic() + 300
        while "ready in" not in (root / "ui.out").read_text():
            assert proc.poll() is None, (root / "ui.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "molfed ui did not get ready in 300 s"
            time.sleep(0.5)
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()


def test_molfed_ui_serves_this_projects_stores(ui):
    text = (ui["root"] / "ui.out").read_text()
    assert f"  {ui['prefect']}\n" in text and f"  {ui['mlflow']}\n" in text  # whole addresses, one per line
    assert f"store sqlite:///{ui['root'].resolve()}/mlruns/mlflow.db" in text
    assert _get(f"{ui['prefect']}/api/health") is True or _answers(f"{ui['prefect']}/api/health")
    _get(f"{ui['mlflow']}/api/2.0/mlflow/experiments/create", {"name": "probe-from-ui-test"})
    with closing(sqlite3.connect(ui["root"] / "mlruns" / "mlflow.db")) as db:
        names = {row[0] for row in db.execute("select name from experiments")}
    assert "probe-from-ui-test" in names  # the UI's store is this project's file, not another folder's


@pytest.fixture(scope="module")
def demo_run(ui):
    """A 2-round demo federation with both baselines, run from the project folder against the UI's Prefect server,
    output redirected to a file (not a terminal), then ``molfed deploy`` of the same config."""
    root, env = ui["root"], {**ui["env"], "PREFECT_API_URL": f"{ui['prefect']}/api"}
    paths = write_demo_partners(root / "data", seed=0)
    sets = ["name=first-hour", "federation.rounds=2", "train.epochs=1", "model.hidden_channels=16"]
    sets += ["tracking.experiment=first-hour", "tracking.registered_model=first-hour"]
    sets += partner_overrides(paths, root / "ws")
    flags = [x for s in sets for x in ("--set", s)]
    config = str(REPO / "configs" / "demo.yaml")
    run = subprocess.run(
        [sys.executable, "-m", "molfed.cli", "run", config, *flags],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    deploy = subprocess.run(
        [sys.executable, "-m", "molfed.cli", "deploy", "--config", config, *flags],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, (deploy.stdout + deploy.stderr)[-4000:]
    return {"run": run.stdout, "deploy": deploy.stdout + deploy.stderr, "env": env}


def test_a_redirected_run_prints_a_line_per_round_and_pasteable_hints(ui, demo_run):
    out = demo_run["run"]
    rounds = [line for line in out.splitlines() if line.startswith("rounds ")]
    assert [r.split(":")[0] for r in rounds] == ["rounds 1/2", "rounds 2/2"], out[-2000:]
    assert all(re.search(r"\| elapsed \d+ s, ETA \d+ s$", r) for r in rounds), rounds
    assert re.search(r"^Finished in [\d.]+ s \(federation [\d.]+ s\)", out, re.M), out[-2000:]
    ui_line = next(line for line in out.splitlines() if " ui --tracking-uri " in line)
    assert f"sqlite:///{ui['root'].resolve()}/mlruns/mlflow.db" in ui_line and ui_line.startswith("  PREFECT_HOME=/")


def test_deploy_says_what_to_start_next_and_nothing_misleading(ui, demo_run):
    out = demo_run["deploy"]
    assert "deployed federated-training/federated-training" in out
    assert f"  cd {ui['root']} && PREFECT_API_URL={ui['prefect']}/api /" in out and "coordinator-agent" in out
    assert f"  {ui['prefect']}/deployments" in out
    assert ".serve" not in out and "prefect worker start" not in out


def _mlflow_runs(ui) -> tuple[str, list[dict]]:
    exp = _get(f"{ui['mlflow']}/api/2.0/mlflow/experiments/get-by-name?experiment_name=first-hour")["experiment"]
    runs = _get(f"{ui['mlflow']}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    return exp, runs


def test_mlflow_runs_are_named_like_the_flow_run_and_children_can_be_compared(ui, demo_run):
    exp, runs = _mlflow_runs(ui)
    tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert tags.get("mlflow.experimentKind") == "custom_model_development"  # opens on the runs table
    by_kind = {{t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("molfed.kind"): r for r in runs}
    parent = by_kind["federated"]
    assert re.fullmatch(r"first-hour \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", parent["info"]["run_name"])
    flows = _get(
        f"{ui['prefect']}/api/flow_runs/filter", {"flow_runs": {"name": {"any_": [parent["info"]["run_name"]]}}}
    )
    assert len(flows) == 1  # the Prefect flow run has the very same name
    for kind in ("local_only", "pooled"):
        child = next(r for k, r in by_kind.items() if k and k.replace("-", "_") == kind)
        params = {p["key"]: p["value"] for p in child["data"].get("params", [])}
        assert params["kind"] == child_kind(child) and params["federation.strategy"] == "fedavgm"
        assert any(k.startswith("n_test.") for k in params)
        listed = _get(f"{ui['mlflow']}/api/2.0/mlflow/artifacts/list?run_id={child['info']['run_id']}")
        assert "metrics.json" in [f["path"] for f in listed.get("files", [])]


def child_kind(run: dict) -> str:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}["molfed.kind"]


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver; make setup)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (make setup installs it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver, url: str, expect: str, timeout: float = 90) -> str:
    """Open ``url`` and wait until its text shows ``expect``; fail at once on an error page."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
        bad = [e for e in ERROR_TEXTS if e in text]
        assert not bad, f"{url}: error page ({bad}): {text[:1500]}"
        if expect in text:
            return text
        time.sleep(0.5)
    pytest.fail(f"{url}: {expect!r} not shown within {timeout:.0f} s; page text: {text[:1500]}")


def _screenshot(driver, name: str) -> None:
    """With ``MOLFED_SCREENSHOTS=<folder>``, keep what the browser shows as ``<folder>/<name>.png`` (how the docs'
    tour gets its screens: ``MOLFED_SCREENSHOTS=docs/img python -m pytest tests/integration/test_ui_browser.py``)."""
    folder = os.environ.get("MOLFED_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        time.sleep(2)  # let the page finish drawing
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_the_run_form_and_the_compare_page_open_in_a_browser(ui, demo_run, browser):
    found = _get(f"{ui['prefect']}/api/deployments/name/federated-training/federated-training")
    form = _page_text(browser, f"{ui['prefect']}/deployments/deployment/{found['id']}/run", "Partners")
    order = [form.find(label) for label in ("Name", "Partners", "Tasks", "Federation", "Privacy (advanced)")]
    assert -1 not in order and order == sorted(order), order  # what a chemist sets first comes first
    assert "Parent Run Id" not in form and "resume_run_id" not in form
    _screenshot(browser, "prefect-run-form")
    exp, runs = _mlflow_runs(ui)
    ids = json.dumps([r["info"]["run_id"] for r in runs])
    url = f"{ui['mlflow']}/#/compare-runs?runs={ids}&experiments={json.dumps([exp['experiment_id']])}"
    page = _page_text(browser, url, "Parameters")
    assert "local-only" in page or "pooled" in page
    _screenshot(browser, "mlflow-compare")
    parent = next(r for r in runs if child_kind(r) == "federated")
    url = f"{ui['mlflow']}/#/experiments/{exp['experiment_id']}/runs/{parent['info']['run_id']}"
    _page_text(browser, url, "Parameters")
    _screenshot(browser, "mlflow-run")


def test_ctrl_c_stops_both_servers(ui):
    proc = ui["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, (ui["root"] / "ui.out").read_text()[-2000:]
    assert "stopped Prefect and MLflow UIs" in (ui["root"] / "ui.out").read_text()
    time.sleep(1)
    assert not _answers(f"{ui['prefect']}/api/health") and not _answers(f"{ui['mlflow']}/health")
