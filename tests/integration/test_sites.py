"""Sites mode for real: a Prefect server and an MLflow server (served artifacts) with authentication on, a
coordinator agent (``molfed coordinator-agent``) and one site agent per partner (``molfed site-agent``), each partner
in its own directory with its own site config, library, trusted coordinator key, policy and MLflow user. Deploy, run a
1-round federation of three partners of which one never starts its agent (its jobs are not picked up and the quorum
of 2 lets the run go on without it) and calibrate its kept model at the sites through secure sums, read everything
back, scan for leaks, read each site's audit log; then kill an
agent mid-round in a second federation and resume it, and kill the coordinator itself mid-round in a third and resume
that."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from molfed.audit import scan, structure_needles
from molfed.data.demo import write_demo_partners
from molfed.federated import keys
from molfed.federated.secure.site import run_dir
from molfed.federated.signing import generate_keypair
from molfed.federated.weights import load_weights
from molfed.site.audit import AuditLog, audit_path
from molfed.startup import seed_prefect_database

pytestmark = [pytest.mark.integration, pytest.mark.sites]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
PREFECT_AUTH = "molfed:prefect-secret"
MLFLOW_USER, MLFLOW_PASSWORD = "admin", "mlflow-secret-pw1"
SITE_PASSWORD = "site-secret-pw1"  # each site's own MLflow user is "<name>-site" (least privilege)
PARTNERS = ("beta", "gamma")
ABSENT = "alpha"  # declared in the federation, but its site never starts a worker
OFFLINE_S = 20  # the absent partner fails after this, not after the round timeout (it bounds the prepare wave)
PRIVATE_TASK_SITE = "beta"
# Server services with nothing to do here (no active schedule, automation, pause or late run to act on): off, so
# that they do not compete for the CPU. Events, task-run records and the worker foreman stay on.
IDLE_PREFECT_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("SCHEDULER", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP", "REPOSSESSOR", "TRIGGERS")
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, auth: str | None = None, method: str = "GET") -> int:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


class Processes:
    """Background processes in their own sessions, all stopped (with their children) by :meth:`stop_all`."""

    def __init__(self, logs: Path):
        self.logs, self.procs = logs, {}

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        """SIGTERM every process group at once, then wait (graceful shutdowns overlap), SIGKILL what is left."""
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


def _wait_for(check, what: str, proc: subprocess.Popen, procs: Processes, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{procs.tail(what)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} did not come up within {timeout} s")


TRIGGER = """
import json, sys
from prefect.deployments import run_deployment
params = {"config": json.loads(sys.argv[1])} if len(sys.argv) > 1 else None
run = run_deployment("federated-training/federated-training", parameters=params, timeout=1500)
print(run.state.type.value, run.id)
print(run.state.message or "")
"""


def _site_runs(client: MlflowClient, rid: str) -> list:
    """The federation's ``site-<name>`` runs, one experiment per site."""
    experiments = [e.experiment_id for e in client.search_experiments() if ".site-" in e.name]
    return client.search_runs(experiments, f"tags.mlflow.parentRunId = '{rid}' and tags.`molfed.kind` = 'site'")


def _create_mlflow_user(mlflow_uri: str, name: str) -> None:
    body = json.dumps({"username": name, "password": SITE_PASSWORD}).encode()
    request = urllib.request.Request(
        f"{mlflow_uri}/api/2.0/mlflow/users/create",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    admin = base64.b64encode(f"{MLFLOW_USER}:{MLFLOW_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {admin}")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


def _trigger(env: dict[str, str], cwd: Path, config: dict | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-c", TRIGGER] + ([json.dumps(config)] if config else [])
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1600)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    logs = root / "logs"
    logs.mkdir()
    procs = Processes(logs)
    prefect_port, mlflow_port = _free_port(), _free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base_env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")

    # Prefect server (SQLite) with basic auth; its database from molfed init's template when there is one.
    seed_prefect_database(root / "prefect-server")
    server_env = {
        **base_env,
        "PREFECT_HOME": str(root / "prefect-server"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH,
        **IDLE_PREFECT_SERVICES,
    }
    # MLflow server with served artifacts and the basic-auth app; admin credentials from the environment.
    auth_ini = root / "mlflow-auth.ini"
    auth_ini.write_text(
        f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{root}/mlflow-auth.db\n"
        "admin_username = admin\nauthorization_function = "
        "mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 600\n"  # one password-hash check per client, not one per request
    )
    mlflow_env = {
        **base_env,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": MLFLOW_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "molfed-test-csrf-key",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else 6 job-runner processes start, each importing MLflow
    }
    store = root / "mlflow-store"
    store.mkdir()
    phases, t0 = {}, time.perf_counter()
    try:
        prefect_proc = procs.start(
            "prefect-server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            server_env,
            root,
        )
        mlflow_args = [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--serve-artifacts",
            "--app-name",
            "basic-auth",
            "--workers",
            "1",
        ]
        mlflow_proc = procs.start("mlflow-server", mlflow_args, mlflow_env, root)
        prefect_api, mlflow_uri = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
        _wait_for(lambda: _get(f"{prefect_api}/health", PREFECT_AUTH) == 200, "prefect-server", prefect_proc, procs)
        _wait_for(lambda: _get(f"{mlflow_uri}/health") == 200, "mlflow-server", mlflow_proc, procs)
        phases["servers"] = time.perf_counter() - t0

        client_env = {
            **base_env,
            "PREFECT_API_URL": prefect_api,
            "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
            "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_HOME": str(root / "client-prefect-home"),
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        }
        # Each partner: its own directory with its library and site config; only its worker is told where.
        libraries = write_demo_partners(root / "scratch", seed=0)
        coordinator = root / "coordinator"
        coordinator.mkdir()
        coordinator_public = keys.write_private_key(coordinator / "coordinator.pem")  # molfed keygen --coordinator-key
        sites, public_keys, agent_envs = {}, {ABSENT: generate_keypair()[1]}, {}
        for name in PARTNERS:
            site_dir = root / f"site-{name}"
            (site_dir / "private").mkdir(parents=True)
            site = {
                "name": name,
                "path": "private/library.csv",
                "workspace": "workspace",
                "trusted_coordinators": {"consortium": coordinator_public},
                "policy": {
                    "federations": ["sites-test", "sites-faults", "sites-crash"],
                    "tasks": ["expt"],
                    "require_secure_aggregation": True,
                    # calibrate is opt-in (default deny): these sites list it
                    "jobs": ["prepare", "round", "finish", "calibrate", "share_keys", "mask", "reveal"],
                },
            }
            shutil.copy(libraries[name], site_dir / "private" / "library.csv")
            if name == PRIVATE_TASK_SITE:  # a task only this site has: its head stays in its workspace
                library = pd.read_csv(libraries[name], dtype=str, keep_default_na=False)
                library["bp"] = (100 - 3 * pd.to_numeric(library["expt"], errors="coerce")).round(3)
                library.to_csv(site_dir / "private" / "library.csv", index=False)
                site["private_tasks"] = [{"name": "bp"}]
            (site_dir / "site.yaml").write_text(yaml.safe_dump(site))
            public_keys[name] = keys.write_keypair(site_dir / "workspace")  # as `molfed keygen` at the site
            sites[name] = site_dir
        shutil.rmtree(root / "scratch")
        config = {
            "name": "sites-test",
            "mode": "sites",
            "seed": 0,
            "tasks": [{"name": "expt"}],
            "partners": [{"name": ABSENT}] + [{"name": n, "tracking_user": f"{n}-site"} for n in PARTNERS],
            "model": {"hidden_channels": 32, "num_layers": 2},
            "train": {"epochs": 1, "lr": 0.003},
            "federation": {"rounds": 1, "round_timeout_s": 600, "offline_after_s": OFFLINE_S, "min_partners": 2},
            "baselines": {"local_only": True, "pooled": False},
            "tracking": {"experiment": "sites-test", "registered_model": "sites-test"},
            "schedule": {"cron": "0 3 * * 1", "timezone": "Europe/Berlin", "active": False},
            "integrity": {"signing": True, "public_keys": public_keys, "coordinator_key": "coordinator.pem"},
            "secure_aggregation": {"enabled": True},
            "calibration": {"enabled": True},  # off by default in sites mode
        }
        (coordinator / "sites.yaml").write_text(yaml.safe_dump(config))
        deploy = subprocess.run(
            [str(BIN / "molfed"), "deploy", "--config", "sites.yaml"],
            env=client_env,
            cwd=coordinator,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deploy.returncode == 0, deploy.stderr[-3000:]
        phases["deploy"] = time.perf_counter() - t0 - phases["servers"]
        procs.start(
            "coordinator-agent",
            [str(BIN / "molfed"), "coordinator-agent"],
            client_env,
            coordinator,
        )
        for name, site_dir in sites.items():  # each site with its own MLflow user, not the admin's
            _create_mlflow_user(mlflow_uri, f"{name}-site")
            site_env = {
                **client_env,
                "MLFLOW_TRACKING_USERNAME": f"{name}-site",
                "MLFLOW_TRACKING_PASSWORD": SITE_PASSWORD,
            }
            procs.start(f"agent-{name}", [str(BIN / "molfed"), "site-agent", "site.yaml"], site_env, site_dir)
            agent_envs[name] = site_env
        started = time.perf_counter()
        trigger = _trigger(client_env, coordinator)
        seconds = time.perf_counter() - started
        phases["federation"] = seconds
        yield {
            "root": root,
            "procs": procs,
            "trigger": trigger,
            "seconds": seconds,
            "sites": sites,
            "mlflow_uri": mlflow_uri,
            "prefect_api": prefect_api,
            "store": store,
            "env": client_env,
            "coordinator": coordinator,
            "phases": phases,
            "config": config,
            "agent_envs": agent_envs,
            "restart_mlflow": lambda: procs.start("mlflow-server", mlflow_args, mlflow_env, root),
        }
    finally:
        procs.stop_all()


def test_requests_without_credentials_are_refused(consortium):
    assert _get(f"{consortium['prefect_api']}/flows/filter", method="POST") == 401
    assert _get(f"{consortium['prefect_api']}/flows/filter", PREFECT_AUTH, method="POST") == 200
    assert _get(f"{consortium['mlflow_uri']}/api/2.0/mlflow/experiments/search?max_results=1") == 401
    auth = f"{MLFLOW_USER}:{MLFLOW_PASSWORD}"
    assert _get(f"{consortium['mlflow_uri']}/api/2.0/mlflow/experiments/search?max_results=1", auth) == 200


def test_sites_federation_completes_and_mlflow_holds_rounds(consortium, monkeypatch):
    trigger, procs = consortium["trigger"], consortium["procs"]
    assert trigger.stdout.startswith("COMPLETED"), (trigger.stdout + trigger.stderr)[-3000:] + procs.tail(
        "coordinator-agent"
    )
    print(f"sites federation (2 partners x 1 round, one absent) took {consortium['seconds']:.0f} s")
    print(f"set-up phases (s): {json.dumps({k: round(v, 1) for k, v in consortium['phases'].items()})}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    exp = client.get_experiment_by_name("sites-test")
    parent = [r for r in client.search_runs([exp.experiment_id], "tags.`molfed.kind` = 'federated'")][0]
    assert parent.info.status == "FINISHED" and parent.data.tags["molfed.mode"] == "sites"
    rid = parent.info.run_id
    models = {a.path for a in client.list_artifacts(rid, "global_model")}
    assert "global_model/round_0001.pt" in models
    for name in PARTNERS:
        assert [m.step for m in client.get_metric_history(rid, f"val_rmse.{name}")] == [1]
        assert f"test_rmse.{name}" in parent.data.metrics
    assert parent.data.metrics["partners_failed"] == 0  # the absent partner sat the rounds out, it did not fail them
    assert not any(k.endswith(f".{ABSENT}") for k in parent.data.metrics)
    sites = _site_runs(client, rid)
    assert sorted(r.data.tags["molfed.partner"] for r in sites) == sorted((ABSENT, *PARTNERS))
    for r in sites:  # comparable in MLflow's UI: params of their own (issue 19); replies are their artifacts
        assert r.data.params["kind"] == "site" and r.data.params["partner"] == r.data.tags["molfed.partner"]
        assert r.data.params["federation_run"] == rid and r.data.params["secure_aggregation"] == "True"
    assert str(client.get_model_version_by_alias("sites-test", "champion").version) == "1"


def test_private_head_stays_in_its_sites_workspace(consortium, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    exp = client.get_experiment_by_name("sites-test")
    rid = client.search_runs([exp.experiment_id], "tags.`molfed.kind` = 'federated'")[0].info.run_id
    exported = consortium["sites"][PRIVATE_TASK_SITE] / "workspace" / "models" / rid / "model.pt"
    head = {n: a for n, a in load_weights(str(exported)).items() if n.startswith("private_head.") and a.size >= 16}
    assert head
    needles = [np.ascontiguousarray(a, np.float32).tobytes()[:64] for a in head.values()]
    for f in (p for p in consortium["store"].rglob("*") if p.is_file()):
        data = f.read_bytes()
        assert not any(n in data for n in needles), f
        if f.suffix == ".pt":
            assert not any(n.startswith("private_head.") for n in torch.load(f, weights_only=True)), f
    metrics = client.get_run(rid).data.metrics
    assert np.isfinite(metrics[f"private_test_rmse.bp.{PRIVATE_TASK_SITE}"])


def test_each_worker_read_only_its_own_library(consortium):
    for name, site_dir in consortium["sites"].items():
        caches = list((site_dir / "workspace" / "cache").glob("graphs-*.pt"))
        assert len(caches) == 1, name  # this partner featurized exactly one library: its own
    config = (consortium["coordinator"] / "sites.yaml").read_text()
    assert "library.csv" not in config and "site-" not in config


def test_no_partner_structure_or_path_reaches_the_servers(consortium):
    smiles = [
        s for d in consortium["sites"].values() for s in pd.read_csv(d / "private" / "library.csv", dtype=str)["smiles"]
    ]
    needles, keys = structure_needles(smiles)
    # the private directories' absolute paths must not reach the coordinator's stores either
    paths = [str(d / "private") for d in consortium["sites"].values()]
    roots = [consortium["store"], consortium["root"] / "prefect-server"]
    hits, n_files = scan(roots, needles, keys, substrings=paths)
    assert n_files > 5 and (consortium["root"] / "prefect-server" / "prefect.db").exists()
    assert hits == [], sorted({str(h.path) for h in hits})[:5]


def test_the_kept_model_is_calibrated_at_the_sites_through_secure_sums(consortium, monkeypatch):
    """Issue 18 in sites mode: each site ran the three calibration steps on its own data; the coordinator got
    round keys for the embedding moments and score histograms (their secure sums), coverage counts for the test
    splits, and the registered model carries the calibration. No site's sums reached the store in the clear and
    nothing of the secure sums is left at the sites."""
    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    from molfed.federated.calibration import secure_key

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    exp = client.get_experiment_by_name("sites-test")
    parent = client.search_runs([exp.experiment_id], "tags.`molfed.kind` = 'federated'")[0]
    rid, metrics = parent.info.run_id, parent.data.metrics
    for level in ("80", "90", "95"):
        assert 0 < metrics[f"test_coverage_{level}"] <= 1
        for name in PARTNERS:
            assert 0 <= metrics[f"test_coverage_{level}.expt.{name}"] <= 1
            assert metrics[f"test_interval_width_{level}.expt.{name}"] > 0
    assert 0 <= metrics["test_out_of_domain_rate"] <= 1 and not any(k.endswith(f".{ABSENT}") for k in metrics)
    root = consortium["root"] / "calibration-download"
    mlflow.set_tracking_uri(consortium["mlflow_uri"])
    logged = json.loads(Path(client.download_artifacts(rid, "calibration/calibration.json", str(root))).read_text())
    assert logged["tasks"][0]["n"] > 0 and len(logged["domain"]["mean"]) == 32
    source = ModelsArtifactRepository.get_underlying_uri("models:/sites-test/1").rstrip("/")
    meta = mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/artifacts/model.json", dst_path=str(root))
    assert json.loads(Path(meta).read_text())["calibration"] == logged
    sent = {a.path for a in client.list_artifacts(rid, "federation/calibration")}
    assert sent == {"federation/calibration/scores.json", "federation/calibration/measure.json"}
    for run in (r for r in _site_runs(client, rid) if r.data.tags["molfed.partner"] in PARTNERS):
        site_run = run.info.run_id
        replies = {a.path for a in client.list_artifacts(site_run, "replies")}
        assert {f"replies/calibrate-{s}-0001.json" for s in ("moments", "scores", "measure")} <= replies
        for step in ("moments", "scores"):  # round keys only: the sums went into the secure sum
            reply = json.loads(
                Path(client.download_artifacts(site_run, f"replies/calibrate-{step}-0001.json", str(root))).read_text()
            )
            assert set(reply) == {"advert"}, (step, sorted(reply))
            assert f"replies/calibrate-{step}-reveal-0000.json" in replies
        measured = json.loads(
            Path(client.download_artifacts(site_run, "replies/calibrate-measure-0001.json", str(root))).read_text()
        )
        assert set(measured) == {"measured"} and measured["measured"]["n.expt"] > 0
    for site_dir in consortium["sites"].values():
        for step in ("moments", "scores"):
            assert not run_dir(site_dir / "workspace", secure_key(rid, step)).exists()


READ_DEPLOYMENT = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    d = client.read_deployment_by_name("federated-training/federated-training")
    print(json.dumps({"schema": d.parameter_openapi_schema, "pool": d.work_pool_name,
                      "schedules": [{"cron": s.schedule.cron, "timezone": s.schedule.timezone, "active": s.active}
                                    for s in d.schedules]}))
"""


def test_deployment_renders_a_validated_form_and_carries_the_schedule(consortium):
    out = subprocess.run(
        [sys.executable, "-c", READ_DEPLOYMENT], env=consortium["env"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    assert info["pool"] == "molfed-coordinator"
    assert info["schedules"] == [{"cron": "0 3 * * 1", "timezone": "Europe/Berlin", "active": False}]
    schema = info["schema"]
    assert schema["required"] == ["config"]
    defs = schema["definitions"]
    rounds = defs["FederationConfig"]["properties"]["rounds"]
    assert rounds["minimum"] == 1 and rounds["description"].startswith("Federated rounds")
    assert defs["ModelConfig"]["properties"]["encoder"]["default"] == "gine"
    assert set(defs["RunConfig"]["properties"]) >= {"partners", "tasks", "federation", "mode", "champion"}


def test_partner_without_worker_fails_fast_and_sits_the_run_out_above_quorum(consortium, monkeypatch):
    """Its prepare job is never picked up and its pool has no worker online: after ``offline_after_s`` (not the
    10-minute round timeout) the run goes on with the 2 partners the quorum needs.

    Below the quorum the same failure stops the run: that path is the flow's, shared with local mode, and tested there.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    exp = client.get_experiment_by_name("sites-test")
    parent = client.search_runs([exp.experiment_id], "tags.`molfed.kind` = 'federated'")[0]
    reason = parent.data.tags[f"prepare.failed.{ABSENT}"]
    assert reason == f"no worker online for pool 'partner-{ABSENT}' after {OFFLINE_S} s; start it"


READ_JOB_TIMES = """
import json
from collections import defaultdict
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    runs = client.read_flow_runs(limit=200)
waves, steps = defaultdict(list), defaultdict(list)
for r in runs:
    if not (r.start_time and r.end_time) or r.name.count("-") < 2:
        continue
    action, rnd, _ = r.name.rsplit("-", 2)
    waves[f"{action}-{rnd}"].append((r.created.timestamp(), r.end_time.timestamp()))
    steps[action].append(((r.start_time - r.created).total_seconds(), (r.end_time - r.start_time).total_seconds()))
out = {"waves": {k: max(e for _, e in v) - min(c for c, _ in v) for k, v in waves.items()},
       "steps": {k: [sum(x[0] for x in v) / len(v), sum(x[1] for x in v) / len(v)] for k, v in steps.items()}}
print(json.dumps(out))
"""


def test_rounds_ran_under_secure_aggregation_with_verified_signatures(consortium, monkeypatch):
    """The coordinator aggregated masked vectors only (no update weights travelled), each masked vector signed by
    its site's key and verified; the sites kept nothing of the rounds' secrets or held updates afterwards."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    exp = client.get_experiment_by_name("sites-test")
    parent = client.search_runs([exp.experiment_id], "tags.`molfed.kind` = 'federated'")[0]
    rid, tags = parent.info.run_id, parent.data.tags
    for r in (1,):
        summary = tags[f"molfed.integrity.round.{r}"]
        assert summary.startswith(
            "received 2, plaintext 0, rejected 0, signatures verified 2"
        )  # alpha: gone at prepare
        assert "masked vectors" in summary
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "signatures_verified")] == [(1, 2.0)]
    assert [m.value for m in client.get_metric_history(rid, "updates_rejected")] == [0.0]
    sites = _site_runs(client, rid)
    for run in (r for r in sites if r.data.tags["molfed.partner"] in PARTNERS):
        replies = {a.path for a in client.list_artifacts(run.info.run_id, "replies")}
        assert {"replies/mask-0001.json", "replies/reveal-0001.json"} <= replies
        assert not any(p.endswith(".pt") for p in replies)  # no update weights left the site
    assert not list(consortium["store"].rglob("update-*.pt"))
    for site_dir in consortium["sites"].values():
        assert not run_dir(site_dir / "workspace", rid).exists()  # round secrets and held updates deleted
    homes = [consortium["root"] / "client-prefect-home", consortium["root"] / "prefect-server"]
    assert not [p for h in homes for p in h.rglob("*") if "storage" in p.parts and p.is_file()]  # no job results
    out = subprocess.run(
        [sys.executable, "-c", READ_JOB_TIMES], env=consortium["env"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    times = json.loads(out.stdout)
    added = sum(v for k, v in times["waves"].items() if k.startswith(("share_keys", "mask", "reveal")))
    print(f"job waves (s): {json.dumps({k: round(v, 1) for k, v in sorted(times['waves'].items())})}")
    print(f"per job, mean (queued+start-up s, running s): {json.dumps(times['steps'])}")
    print(f"secure-aggregation steps added {added:.0f} s of {consortium['seconds']:.0f} s")


def test_each_sites_audit_log_holds_its_jobs_and_nothing_of_its_data(consortium):
    """Every job a site ran was signed by the coordinator's key and accepted, then completed; the log names ids,
    kinds and rounds only."""
    for name, site_dir in consortium["sites"].items():
        entries = AuditLog(audit_path(site_dir / "workspace")).entries()
        jobs = [e for e in entries if e["decision"] in ("accepted", "completed", "refused", "failed")]
        assert not [e for e in jobs if e["decision"] in ("refused", "failed")], jobs
        done = sorted(e["action"] for e in jobs if e["decision"] == "completed")
        # one round's jobs and secure sum, then three calibrate jobs and the secure sums of two of them
        expected = ["calibrate"] * 3 + ["finish"] + ["mask"] * 3 + ["prepare"] + ["reveal"] * 3 + ["round"]
        assert done == expected + ["share_keys"] * 3, (name, done)
        assert len({e["key_id"] for e in jobs}) == 1 and all(e["federation"] == "sites-test" for e in jobs)
        text = (audit_path(site_dir / "workspace")).read_text()
        assert "library" not in text and str(site_dir) not in text


def test_a_site_can_read_the_federation_and_write_only_its_own_replies(consortium, monkeypatch):
    """MLflow's basic-auth app, per-experiment permissions as the coordinator granted them: beta's user reads the
    federation's artifacts and writes its own experiment, but can neither overwrite round weights nor read gamma's
    replies."""
    from mlflow.exceptions import MlflowException
    from requests import HTTPError

    denied = (MlflowException, HTTPError)  # the tracking API and the artifact proxy answer 403 differently
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    admin = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    exp = admin.get_experiment_by_name("sites-test")
    rid = admin.search_runs([exp.experiment_id], "tags.`molfed.kind` = 'federated'")[0].info.run_id
    runs = {r.data.tags["molfed.partner"]: r.info.run_id for r in _site_runs(admin, rid)}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "beta-site")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SITE_PASSWORD)
    beta = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    assert "global_model/round_0001.pt" in {a.path for a in beta.list_artifacts(rid, "global_model")}
    forged = consortium["root"] / "round_0001.pt"
    forged.write_bytes(b"not the global model")
    with pytest.raises(denied, match="Permission denied|403"):
        beta.log_artifact(rid, str(forged), "global_model")  # overwrite the round's global weights
    with pytest.raises(denied, match="Permission denied|403"):
        beta.log_metric(rid, "val_rmse.gamma", 0.0)
    with pytest.raises(denied, match="Permission denied|403"):
        beta.list_artifacts(runs["gamma"], "replies")  # another site's replies
    with pytest.raises(denied, match="Permission denied|403"):
        beta.get_run(runs["gamma"])
    beta.set_tag(runs["beta"], "molfed.test", "own run")  # its own experiment: EDIT


FAULT_ROUNDS = 2


@pytest.fixture(scope="module")
def killed_agent(consortium):
    """A second federation (beta and gamma, quorum 2, 2 rounds, secure aggregation): beta's agent is killed (SIGKILL)
    as soon as it has accepted its round-2 job. The coordinator sees the agent gone (no heartbeat) and stops the run
    below quorum, keeping round 1's checkpoint; beta's agent is started again and ``molfed resume`` finishes the run,
    although the MLflow server is stopped and restarted while round 2 runs again (clients retry, nothing fails)."""
    procs, env, coordinator = consortium["procs"], consortium["env"], consortium["coordinator"]
    config = {
        **consortium["config"],
        "name": "sites-faults",
        "partners": [{"name": n, "tracking_user": f"{n}-site"} for n in PARTNERS],
        "federation": {"rounds": FAULT_ROUNDS, "round_timeout_s": 600, "offline_after_s": 5},
        "baselines": {"local_only": False, "pooled": False},
        "tracking": {"experiment": "sites-faults"},
        "integrity": {**consortium["config"]["integrity"], "public_keys": {}, "signing": False},
        "calibration": {"enabled": False},  # calibration is the first federation's
    }
    (coordinator / "faults.yaml").write_text(yaml.safe_dump(config))
    audit = AuditLog(audit_path(consortium["sites"]["beta"] / "workspace"))
    before = len(audit.entries())
    run = subprocess.Popen(
        [str(BIN / "molfed"), "run", "faults.yaml"],
        env=env,
        cwd=coordinator,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not any(
            e["decision"] == "accepted" and e["action"] == "round" and e["server_round"] == 2
            for e in audit.entries()[before:]
        ):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
            time.sleep(0.05)
        os.killpg(procs.procs.pop("agent-beta").pid, signal.SIGKILL)  # mid-round: no reply, no heartbeat
        out, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    stopped = (run.returncode, err)
    procs.start(
        "agent-beta",
        [str(BIN / "molfed"), "site-agent", "site.yaml"],
        consortium["agent_envs"]["beta"],
        consortium["sites"]["beta"],
    )
    run_id = err.rsplit("molfed resume ", 1)[-1].split()[0] if "molfed resume " in err else ""
    gamma = AuditLog(audit_path(consortium["sites"]["gamma"] / "workspace"))
    seen = len(gamma.entries())
    resume = subprocess.Popen(
        [str(BIN / "molfed"), "resume", run_id],
        env=env,
        cwd=coordinator,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # the store goes away while round 2 runs again, and comes back ~10 s later
        deadline = time.monotonic() + 600
        while not any(e["decision"] == "accepted" and e["action"] == "round" for e in gamma.entries()[seen:]):
            assert resume.poll() is None and time.monotonic() < deadline, resume.communicate()[1][-3000:]
            time.sleep(0.05)
        procs.stop("mlflow-server")
        outage = time.monotonic()
        proc = consortium["restart_mlflow"]()
        _wait_for(lambda: _get(f"{consortium['mlflow_uri']}/health") == 200, "mlflow-server", proc, procs)
        outage = time.monotonic() - outage
        out, err = resume.communicate(timeout=900)
    finally:
        if resume.poll() is None:
            resume.kill()
    resumed = subprocess.CompletedProcess(resume.args, resume.returncode, out, err)
    print(f"MLflow server down for {outage:.1f} s during the resumed run")
    return {"stopped": stopped, "run_id": run_id, "resumed": resumed, "audit": audit.entries()[before:]}


def test_an_agent_killed_mid_round_stops_the_round_and_resume_finishes_the_run_through_a_store_outage(
    consortium, killed_agent, monkeypatch
):
    code, err = killed_agent["stopped"]
    assert code == 2 and "run stopped below quorum" in err, err[-2000:]
    assert "the agent of pool 'partner-beta' went offline during the round job" in err
    assert "checkpoint after round 1 kept" in err
    resumed = killed_agent["resumed"]
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    run = client.get_run(killed_agent["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["molfed.checkpoint.round"] == str(FAULT_ROUNDS)
    # every round counted once: one value per round, two updates each (no update lost, none counted twice)
    received = client.get_metric_history(run.info.run_id, "updates_received")
    assert sorted((m.step, m.value) for m in received) == [(r, 2.0) for r in range(1, FAULT_ROUNDS + 1)]
    # validation once per round: round 1's as sums inside the masked updates (the union only), the last round's
    # from the final jobs (per partner, as in every mode)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_rmse")]
    assert sorted(steps) == list(range(1, FAULT_ROUNDS + 1)), steps
    for name in PARTNERS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, f"val_rmse.{name}")]
        assert steps == [FAULT_ROUNDS], (name, steps)
    # at the site: round 2 was accepted twice (the killed attempt, then the resumed one) and completed once
    rounds = [(e["decision"], e["server_round"]) for e in killed_agent["audit"] if e["action"] == "round"]
    assert rounds.count(("accepted", 2)) == 2 and rounds.count(("completed", 2)) == 1, rounds


CRASH_ROUNDS = 1


@pytest.fixture(scope="module")
def killed_coordinator(consortium):
    """A third federation (beta and gamma, 1 round, secure aggregation): the coordinator's own process (``molfed
    run``) is killed (SIGKILL: no cleanup, no final state) as soon as beta has accepted its round-1 job, and ``molfed
    resume`` finishes the run from the last committed checkpoint (round 0) while both agents keep serving."""
    env, coordinator = consortium["env"], consortium["coordinator"]
    config = {
        **consortium["config"],
        "name": "sites-crash",
        "partners": [{"name": n, "tracking_user": f"{n}-site"} for n in PARTNERS],
        "federation": {"rounds": CRASH_ROUNDS, "round_timeout_s": 600, "offline_after_s": 5},
        "baselines": {"local_only": False, "pooled": False},
        "tracking": {"experiment": "sites-crash"},
        "integrity": {**consortium["config"]["integrity"], "public_keys": {}, "signing": False},
        "calibration": {"enabled": False},  # calibration is the first federation's
    }
    (coordinator / "crash.yaml").write_text(yaml.safe_dump(config))
    audits = {n: AuditLog(audit_path(consortium["sites"][n] / "workspace")) for n in PARTNERS}
    before = {n: len(a.entries()) for n, a in audits.items()}
    run = subprocess.Popen(
        [str(BIN / "molfed"), "run", "crash.yaml"],
        env=env,
        cwd=coordinator,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not any(
            e["decision"] == "accepted" and e["action"] == "round" and e["server_round"] == 1
            for e in audits["beta"].entries()[before["beta"] :]
        ):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)  # mid-round: the round's jobs are out, nothing of round 1 committed
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    os.environ.update(MLFLOW_TRACKING_USERNAME=MLFLOW_USER, MLFLOW_TRACKING_PASSWORD=MLFLOW_PASSWORD)
    try:
        experiment = client.get_experiment_by_name("sites-crash")
        (federation,) = client.search_runs([experiment.experiment_id])  # its site runs live in their own experiments
        killed = (run.returncode, federation.info.status, federation.data.tags.get("molfed.checkpoint.round"))
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
    resumed = subprocess.run(
        [str(BIN / "molfed"), "resume", federation.info.run_id],
        env=env,
        cwd=coordinator,
        capture_output=True,
        text=True,
        timeout=900,
    )
    entries = {n: a.entries()[before[n] :] for n, a in audits.items()}
    return {"killed": killed, "run_id": federation.info.run_id, "resumed": resumed, "audit": entries}


def test_a_coordinator_killed_mid_round_is_resumed_and_every_round_counts_once(
    consortium, killed_coordinator, monkeypatch
):
    code, status, committed = killed_coordinator["killed"]
    assert code == -signal.SIGKILL and status == "RUNNING" and committed == "0", killed_coordinator["killed"]
    resumed = killed_coordinator["resumed"]
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    client = MlflowClient(tracking_uri=consortium["mlflow_uri"])
    run = client.get_run(killed_coordinator["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["molfed.checkpoint.round"] == str(CRASH_ROUNDS)
    received = client.get_metric_history(run.info.run_id, "updates_received")
    assert sorted((m.step, m.value) for m in received) == [(r, 2.0) for r in range(1, CRASH_ROUNDS + 1)]
    for name in PARTNERS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, f"val_rmse.{name}")]
        assert steps == [CRASH_ROUNDS], (name, steps)  # the final jobs' validation, once
        # at each site: the resumed coordinator asked for round 1 again, so beta (which had it when the coordinator
        # died) accepted it twice; gamma's first round-1 job may or may not have been sent before the kill
        entries = killed_coordinator["audit"][name]
        rounds = [e["server_round"] for e in entries if e["decision"] == "accepted" and e["action"] == "round"]
        assert rounds == [1] * len(rounds) and len(rounds) in ((2,) if name == "beta" else (1, 2)), (name, rounds)
