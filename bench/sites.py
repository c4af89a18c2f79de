"""Sites mode next to local mode: the same federation, through the same flow, side by side in one run.

One Prefect server (SQLite, basic auth, idle services off) and one MLflow server (served artifacts, basic-auth app)
are started on loopback ports, ``molfed deploy`` creates the partner pools, and one ``molfed site-agent`` per
partner (alpha, beta, gamma: the demo libraries, each in its own site directory with its own ``site.yaml``) serves
its pool, as in ``tests/integration/test_sites.py``. Each case is then a fresh process that loads a config and calls
``flows.federated_training.federated_training(config)`` against those two servers: ``mode: local`` (partners'
paths and workspaces, separate from the sites') or ``mode: sites`` (partner names and the coordinator's key). Model,
training and data settings are ``configs/demo.yaml``'s; both modes have the pooled and the local-only baselines off,
update signing off and secure aggregation off (``--secure``: on in both); the champion comparison stays on in both.

A warm-up pair (1 round, not in the ratios) first featurizes each workspace's library, creates the experiments and
registered models, and gives the agents their first job. Then ``--repeat`` pairs run interleaved (local, sites,
local, sites, ...): this VM's speed drifts by 10-30 % over minutes, so the figure is the median of per-pair
ratios, with their range. Per case: the process's wall time (start-up and imports included) and the flow call's
own time (the primary figure), the steady round (rounds 2..N, from the MLflow timestamps of ``train_loss``), and
the CPU seconds of the case's process, the servers and the agents. The agents run (and poll) during the local
cases too, as they would on a coordinator's shared servers. A case whose flow raises is reported with its error
and left out of the ratios.

Per-job overhead (target: median <= 1 s) is read from Prefect after the runs: for every flow run of the
``partner-job`` / ``secagg-job`` deployments a sites case created, ``start_time - created`` (the request visible
on the server until the agent marks it Running), and ``end_time - start_time`` (the job at the site). The
coordinator's view per wave (one action at every partner; means, so that a round's wave and gap add up): first to
last job created (the coordinator's creates, one after the other), first created to last ended, and the gap until the
next wave's first job is created (the coordinator's own work). The Prefect server logs its retryable errors
(``database is locked``, answered with 503, which molfed retries after 50 ms, growing): their count per case is
printed.

    PYTHONPATH=. .venv/bin/python bench/sites.py [--rounds 10] [--repeat 2] [--secure]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARTNERS = ("alpha", "beta", "gamma")
PREFECT_AUTH, MLFLOW_USER, MLFLOW_PASSWORD = "molfed:bench-secret", "admin", "bench-secret-pw1"
IDLE = ("SCHEDULER", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP", "REPOSSESSOR", "TRIGGERS")
ACTIONS = ("prepare", "round", "share_keys", "mask", "reveal", "finish")
RETRYABLE = "Encountered retryable exception"  # the Prefect server's log line for a 503 (SQLite locked)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, auth: str | None = None, body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            text = response.read()
            return response.status, json.loads(text) if text.startswith((b"{", b"[")) else text
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return 0, None


class Stack:
    """Servers and agents, each in its own process group; :meth:`stop` ends them all (SIGTERM, then SIGKILL)."""

    def __init__(self, root: Path):
        self.root, self.procs = root, {}
        (root / "logs").mkdir()

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        log = open(self.root / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True)

    def wait(self, name: str, ready, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not come up:\n{self.log(name)[-3000:]}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per kind of process (``prefect``, ``mlflow``, ``agent``), children included."""
        out: dict[str, float] = defaultdict(float)
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(proc.pid)
                for p in (top, *top.children(recursive=True)):
                    t = p.cpu_times()
                    out[name.split("-")[0]] += t.user + t.system + t.children_user + t.children_system
        return out

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _configs(root: Path, rounds: int, secure: bool) -> dict[str, Path]:
    """The federation as ``mode: local`` and as ``mode: sites`` (demo.yaml's model, training and data settings)."""
    base = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    base |= {"name": "bench-sites", "federation": {**base.get("federation", {}), "rounds": rounds}}
    base |= {"baselines": {"local_only": False, "pooled": False}, "secure_aggregation": {"enabled": secure}}
    base |= {"calibration": {"enabled": False}}  # the bench times rounds: no calibration, no hold-out
    local = [{"name": n, "path": f"libraries/{n}.csv", "workspace": f"local-workspaces/{n}"} for n in PARTNERS]
    sites = {"partners": [{"name": n} for n in PARTNERS], "integrity": {"coordinator_key": "coordinator.pem"}}
    out = {}
    for mode, extra in (("local", {"partners": local}), ("sites", sites)):
        tracking = {"experiment": f"bench-{mode}", "registered_model": f"bench-{mode}"}
        out[mode] = root / f"{mode}-{rounds}.yaml"
        out[mode].write_text(yaml.safe_dump(base | extra | {"mode": mode, "tracking": tracking}))
    return out


def _consortium(args: argparse.Namespace, root: Path, stack: Stack) -> tuple[dict, str, str]:
    """Both servers, the three sites, ``molfed deploy``, the agents online: (client env, Prefect API, MLflow URI)."""
    from molfed.data.demo import write_demo_partners
    from molfed.federated import keys
    from molfed.startup import seed_prefect_database

    pp, mp, started = _port(), _port(), time.perf_counter()
    prefect, mlflow = f"http://127.0.0.1:{pp}/api", f"http://127.0.0.1:{mp}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base |= {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
    seed_prefect_database(root / "prefect-server")
    server = {"PREFECT_HOME": str(root / "prefect-server"), "PREFECT_UI_ENABLED": "false"}
    server |= {"PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH, "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}
    server |= {f"PREFECT_SERVER_SERVICES_{s}_ENABLED": "false" for s in IDLE}
    stack.start("prefect", f"{BIN}/prefect server start --host 127.0.0.1 --port {pp}".split(), base | server, root)
    ini = root / "mlflow-auth.ini"
    ini.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root}/mlflow-auth.db\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\nauth_cache_ttl_seconds = 600\n"
    )
    server = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": MLFLOW_PASSWORD}
    server |= {"MLFLOW_FLASK_SERVER_SECRET_KEY": "bench-csrf", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = f"{BIN}/mlflow server --host 127.0.0.1 --port {mp} --workers 1 --serve-artifacts --app-name basic-auth"
    store = root / "mlflow-store"
    cmd = [*cmd.split(), "--backend-store-uri", f"sqlite:///{store}.db", "--artifacts-destination", str(store)]
    stack.start("mlflow", cmd, base | server, root)
    stack.wait("prefect", lambda: _http(f"{prefect}/health", PREFECT_AUTH)[0] == 200)
    stack.wait("mlflow", lambda: _http(f"{mlflow}/health")[0] == 200)
    env = base | {"PREFECT_API_URL": prefect, "PREFECT_API_AUTH_STRING": PREFECT_AUTH, "PYTHONPATH": str(ROOT)}
    env |= {"PREFECT_HOME": str(root / "client-prefect-home"), "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}
    env |= {"MLFLOW_TRACKING_URI": mlflow, "MLFLOW_TRACKING_USERNAME": MLFLOW_USER}
    env |= {"MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD}
    libraries = write_demo_partners(root / "libraries", seed=0)
    trusted = {"bench": keys.write_private_key(root / "coordinator.pem")}
    for n in PARTNERS:
        site = root / f"site-{n}"
        (site / "private").mkdir(parents=True)
        shutil.copy(libraries[n], site / "private" / "library.csv")
        policy = {"federations": ["bench-sites"], "tasks": ["expt"]}
        # all sites share this machine: one training thread each, as local mode gives each of 3 partners on 2 cores
        spec = {
            "name": n,
            "path": "private/library.csv",
            "workspace": "workspace",
            "policy": policy,
            "torch_threads": 1,
        }
        (site / "site.yaml").write_text(yaml.safe_dump(spec | {"trusted_coordinators": trusted}))
    deploy = [f"{BIN}/molfed", "deploy", "--config", str(_configs(root, args.rounds, args.secure)["sites"])]
    done = subprocess.run(deploy, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"molfed deploy failed:\n{done.stderr[-3000:]}")
    for n in PARTNERS:
        stack.start(f"agent-{n}", [f"{BIN}/molfed", "site-agent", "site.yaml"], env, root / f"site-{n}")
    for n in PARTNERS:
        url = f"{prefect}/work_pools/partner-{n}/workers/filter"
        stack.wait(
            f"agent-{n}", lambda u=url: any(w["status"] == "ONLINE" for w in _http(u, PREFECT_AUTH, {})[1] or [])
        )
    print(f"servers, deploy, 3 site agents up in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs")
    return env, prefect, mlflow


def _case(env: dict[str, str], config: Path) -> dict:
    """One fresh process calling the flow: wall and CPU seconds, time window, and the flow's time and run id, or
    ``failed`` (the error's last line) when the flow raised."""
    before, t0, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time(), time.perf_counter()
    cmd = [sys.executable, __file__, "--case", str(config)]
    done = subprocess.run(cmd, env=env, cwd=config.parent, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}
    out |= {"t0": t0, "t1": time.time(), "flow": float("nan"), "run_id": None}
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        return out | {"wall": float("nan"), "failed": lines[-1].split(" - Response")[0][-160:]}
    return out | json.loads(done.stdout.rsplit("CASE ", 1)[1])


def child(config_path: Path) -> None:
    """--case: load the config and call the flow in this process, as ``molfed run`` does."""
    from molfed.cli import prefect_environment
    from molfed.startup import lazy_optional_imports

    prefect_environment()
    lazy_optional_imports()
    from flows.federated_training import federated_training
    from molfed.config import load_config

    config = load_config(config_path, [])
    start = time.perf_counter()
    result = federated_training(config)
    print("CASE " + json.dumps({"flow": time.perf_counter() - start, "run_id": result["run_id"]}))


def _steady_round(mlflow: str, run_id: str, rounds: int) -> float:
    """Seconds per round between the commits of rounds 2 and N (``train_loss`` timestamps)."""
    url = f"{mlflow}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=train_loss"
    stamps = {m["step"]: m["timestamp"] for m in (_http(url, f"{MLFLOW_USER}:{MLFLOW_PASSWORD}")[1] or {})["metrics"]}
    return (stamps[rounds] - stamps[2]) / 1000 / (rounds - 2) if rounds > 2 else float("nan")


def _jobs(prefect: str, t0: float, t1: float) -> list[tuple[str, float, float, float]]:
    """(name, created, start, end) of the partner pools' flow runs expected to start within [t0, t1] that ran."""
    window = {k: datetime.fromtimestamp(t, UTC).isoformat() for k, t in (("after_", t0 - 1), ("before_", t1 + 1))}
    pools = {"name": {"any_": [f"partner-{n}" for n in PARTNERS]}}
    runs: list[dict] = []
    while not runs or len(runs) % 200 == 0:
        body = {"flow_runs": {"expected_start_time": window}, "work_pools": pools, "limit": 200, "offset": len(runs)}
        status, page = _http(f"{prefect}/flow_runs/filter", PREFECT_AUTH, body)
        if status != 200 or not page:
            break
        runs += page  # type: ignore[arg-type]
    ts = datetime.fromisoformat
    return [
        (r["name"], ts(r["created"]).timestamp(), ts(r["start_time"]).timestamp(), ts(r["end_time"]).timestamp())
        for r in runs
        if r["start_time"] and r["end_time"]
    ]


def _run(args: argparse.Namespace, root: Path, stack: Stack) -> None:
    env, prefect, mlflow = _consortium(args, root, stack)
    warm, configs = _configs(root, 1, args.secure), _configs(root, args.rounds, args.secure)
    plan = [("warm-up", m, warm[m]) for m in ("local", "sites")]
    plan += [(f"pair {i + 1}", m, configs[m]) for i in range(args.repeat) for m in ("local", "sites")]
    print(f"\n{'':<22} {'wall s':^22}  {'CPU s during the case':^32}")
    print(f"{'case':<8} {'mode':<6} {'rounds':>6}  {'process':>7} {'flow':>6} {'round':>6}  ", end="")
    print(f"{'flow proc':>9} {'prefect':>7} {'mlflow':>6} {'agents':>6}  {'503s':>4}")
    cases = []
    for label, mode, path in plan:
        before, errors = stack.cpu(), stack.log("prefect").count(RETRYABLE)
        r = _case(env, path)
        cpu = {k: v - before.get(k, 0.0) for k, v in stack.cpu().items()}
        rounds = 1 if label == "warm-up" else args.rounds
        r |= {"mode": mode, "round": _steady_round(mlflow, r["run_id"], rounds) if r["run_id"] else float("nan")}
        r["jobs"] = _jobs(prefect, r["t0"], r["t1"]) if mode == "sites" else []
        print(
            f"{label:<8} {mode:<6} {rounds:>6}  {r['wall']:>7.1f} {r['flow']:>6.1f} {r['round']:>6.2f}"
            f"  {r['cpu']:>9.1f} {cpu['prefect']:>7.1f} {cpu['mlflow']:>6.1f} {cpu['agent']:>6.1f}  "
            f"{stack.log('prefect').count(RETRYABLE) - errors:>4}",
            flush=True,
        )
        if "failed" in r:
            print(f"         FAILED after {time.time() - r['t0']:.0f} s: {r['failed']}", flush=True)
        if label != "warm-up":
            cases.append(r)
    _report(args, [r for r in cases if r["mode"] == "local"], [r for r in cases if r["mode"] == "sites"])


def _report(args: argparse.Namespace, local: list[dict], sites: list[dict]) -> None:
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in sites:
        waves: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for name, created, start, end in r["jobs"]:
            waves[name.rsplit("-", 1)[0]].append((created, start, end))  # "{action}-{round}"
        ordered = sorted(waves.items(), key=lambda kv: min(j[0] for j in kv[1]))
        for i, (wave, jobs) in enumerate(ordered):
            s, first, last_end = stats[wave.rsplit("-", 1)[0]], min(j[0] for j in jobs), max(j[2] for j in jobs)
            s["queued"] += [start - created for created, start, _ in jobs]
            s["running"] += [end - start for _, start, end in jobs]
            s["spread"].append(max(j[0] for j in jobs) - first)
            s["wave"].append(last_end - first)
            if i + 1 < len(ordered):
                s["gap"].append(min(j[0] for j in ordered[i + 1][1]) - last_end)
    print(f"\nsites jobs of the {len(sites)} measured sites runs, seconds; per wave (an action at every partner): mean")
    print(f"{'':<16} {'per job':^29}  {'per wave':^30}")
    print(
        f"{'job':<11} {'n':>4} {'created -> Running':>20} {'running':>8}  {'1st->last':>9} {'wave':>6} {'gap after':>9}"
    )
    print(f"{'':<16} {'median   p90   max':>20} {'median':>8}  {'created':>9}")
    for action in sorted(stats, key=ACTIONS.index):
        s = stats[action]
        q = sorted(s["queued"])
        mean = {k: statistics.fmean(s[k]) if s[k] else float("nan") for k in ("spread", "wave", "gap")}
        print(
            f"{action:<11} {len(q):>4} {_med(q):>8.2f} {q[int(0.9 * (len(q) - 1))]:>5.2f} {q[-1]:>5.2f}"
            f" {_med(s['running']):>8.2f}  {mean['spread']:>9.2f} {mean['wave']:>6.2f} {mean['gap']:>9.2f}"
        )
    print(f"steady round (rounds 2..N, median): sites {_med(r['round'] for r in sites):.2f} s, ", end="")
    print(f"local {_med(r['round'] for r in local):.2f} s")
    secure = "on" if args.secure else "off"
    print(
        f"\n{len(PARTNERS)} partners x {args.rounds} rounds, demo.yaml's model and training, in both modes: pooled "
        f"and local-only baselines off, update signing off, secure aggregation {secure}, champion comparison on"
    )
    pairs = [(lo, si) for lo, si in zip(local, sites, strict=True) if "failed" not in lo and "failed" not in si]
    ratios = {k: [si[k] / lo[k] for lo, si in pairs] or [float("nan")] for k in ("flow", "wall")}
    done = f"{sum('failed' not in r for r in sites)} of {len(sites)} sites runs completed"
    print(f"{'':<28} {'local':>7} {'sites':>7}  sites/local: median [range] of {len(pairs)} adjacent pairs ({done})")
    for key, name in (("flow", "flow call, s (median)"), ("wall", "fresh process, s (median)")):
        x = ratios[key]
        lo, si = _med(r[key] for r in local), _med(r[key] for r in sites)
        print(f"{name:<28} {lo:>7.1f} {si:>7.1f}  {_med(x):.2f}x [{min(x):.2f}-{max(x):.2f}]")
    queued = _med(x for s in stats.values() for x in s["queued"])
    print(f"\nper-job overhead median {queued:.2f} s (target <= 1 s): {'met' if queued <= 1 else 'not met'}")
    x = ratios["flow"]
    print(
        f"sites/local wall ratio median {_med(x):.2f}x [{min(x):.2f}-{max(x):.2f}] (flow call; target <= 2x; {done}): "
        f"{'met' if _med(x) <= 2 and len(pairs) == len(sites) else 'not met'}"
    )


def _med(xs) -> float:
    """Median of the finite values; NaN if there are none."""
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="measured (local, sites) pairs, interleaved")
    parser.add_argument("--secure", action="store_true", help="secure aggregation on in both modes")
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return child(args.case)
    root = Path(tempfile.mkdtemp(prefix="molfed-bench-sites-"))
    stack = Stack(root)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench stops its servers and agents too
    try:
        _run(args, root, stack)
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
