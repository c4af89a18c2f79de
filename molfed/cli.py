"""``molfed`` command line: run federations, write demo data, predict with logged models.

User mistakes (bad configs, bad libraries, unknown names) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from molfed.errors import MolfedError

_PROCESS_START = time.monotonic()  # "Finished in" counts the whole command, imports and shutdown of servers included
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
DEMO_DATA = REPO_ROOT / "demo_data"

_PREFECT_DEFAULTS = {
    # No network on partner machines: no telemetry.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # A cold ephemeral server can take > 20 s (Prefect's default) on 2 cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def prefect_environment(verbose: bool = False) -> None:
    """Set molfed's Prefect defaults (user-set variables win). Call before importing prefect."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molfed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a federation config (YAML)")
    run.add_argument("config", type=Path)
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=5 (repeatable)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show Prefect's run logs on the console")

    res = sub.add_parser("resume", help="continue a stopped federation run from its last checkpoint")
    res.add_argument("run_id", help="the MLflow run id of the federation")
    res.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlruns")
    res.add_argument("-v", "--verbose", action="store_true", help="show Prefect's run logs on the console")

    demo = sub.add_parser("demo", help="write the demo partner libraries (if missing) and run configs/demo.yaml")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("-v", "--verbose", action="store_true")

    data = sub.add_parser("demo-data", help="write the demo partner libraries (FreeSolv split by scaffold)")
    data.add_argument("out_dir", type=Path)
    data.add_argument("--seed", type=int, default=0)

    dep = sub.add_parser(
        "deploy",
        help="create work pools and Prefect deployments (needs PREFECT_API_URL); prints what to start next",
        description="Create the work pools and the Prefect deployment 'federated-training/federated-training' (and, "
        "in sites mode, each partner's job deployments) on the Prefect server PREFECT_API_URL names. The config "
        "becomes the run form's defaults; its MLflow store is written as an absolute URI, so a run started from "
        "the UI logs where `molfed run` would from this folder. Afterwards it prints, one command per line, what "
        "to start: the coordinator agent that runs the deployment's flow runs (and the site agents in sites mode) "
        "and the UI's address.",
    )
    dep.add_argument(
        "--config", type=Path, default=DEMO_CONFIG, help="the federation's YAML (default: the demo, %(default)s)"
    )
    dep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=5 (repeatable)",
    )

    ui = sub.add_parser(
        "ui",
        help="start the Prefect and MLflow UIs on this project's stores (absolute paths); Ctrl-C stops both",
        description="Start Prefect's server (UI and API, on $PREFECT_HOME, else ~/.prefect) and MLflow's UI (on "
        "the store `molfed run` uses from this folder) on loopback, print their addresses and wait; Ctrl-C or "
        "SIGTERM stops both. Their output goes to a log file in ./molfed-logs.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    ui.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI and API port (default %(default)s)")
    ui.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default %(default)s)")
    ui.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlruns (absolute)")
    ui.add_argument("--services", action="store_true", help="also run Prefect's scheduler (for scheduled retraining)")

    agent = sub.add_parser(
        "site-agent",
        help="serve a partner's pool (sites mode): run molfed's own jobs for requests a trusted coordinator signed, "
        "within the site's policy; refuse and audit everything else",
    )
    agent.add_argument("site_config", type=Path, help="the partner's own YAML: library, workspace, keys, policy")
    sub.add_parser(
        "coordinator-agent",
        help="serve pool molfed-coordinator: run the installed federated-training flow for valid configs only "
        "(instead of a Prefect worker, which runs any deployment's code)",
    )
    work = sub.add_parser("site-worker", help="replaced by site-agent (a plain Prefect worker runs any code)")
    work.add_argument("site_config", type=Path)

    pred = sub.add_parser("predict", help="predict with a logged or registered model")
    pred.add_argument(
        "--model",
        required=True,
        help="models:/name/1, models:/name@alias, models:/m-<id>, runs:/..., or a local model directory (fastest)",
    )
    pred.add_argument("--input", required=True, type=Path, help="CSV with a SMILES column")
    pred.add_argument("--smiles-column", default="smiles")
    pred.add_argument("--output", required=True, type=Path)
    pred.add_argument(
        "--tracking-uri",
        default=None,
        help="for a models:/ or runs:/ URI (default: $MLFLOW_TRACKING_URI, else ./mlruns)",
    )

    val = sub.add_parser("validate", help="check a config and read every partner library (writes rejects.csv)")
    val.add_argument("config", type=Path)
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    aud = sub.add_parser("audit", help="scan MLflow, Prefect and log files for partner structures (exit 1 on a hit)")
    aud.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the federation config (partners' libraries)")
    aud.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    aud.add_argument("--site-config", action="append", default=[], type=Path, help="sites mode: a partner's config")
    aud.add_argument("--tracking-uri", default=None, help="default: the config's, else $MLFLOW_TRACKING_URI, ./mlruns")
    aud.add_argument("--prefect-home", type=Path, default=None, help="default: $PREFECT_HOME, else ~/.prefect")
    aud.add_argument("--path", action="append", default=[], type=Path, help="more files or folders (logs)")
    sub.add_parser(
        "init", help="one-time set-up: empty, migrated Prefect and MLflow databases that new stores start from"
    )
    keygen = sub.add_parser(
        "keygen", help="write a partner's update-signing key into its workspace, print the public key"
    )
    who = keygen.add_mutually_exclusive_group(required=True)
    who.add_argument("--workspace", type=Path, help="a partner: its private workspace (update-signing key)")
    who.add_argument(
        "--coordinator-key", type=Path, help="the coordinator: PEM file for the key that signs job requests"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status. Called without ``argv`` (the ``molfed`` command itself), the
    process exits promptly afterwards: the heap is frozen first, as the interpreter's last garbage collection over
    everything a run loaded (graphs, torch, Prefect, MLflow) took 2-5 s after the run had finished."""
    try:
        return _command(argv)
    finally:
        if argv is None:
            import gc

            gc.freeze()


def _command(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "resume":
            _start_prefect_early(args.verbose)
        if args.command == "run":
            return _run(args.config, args.overrides, args.verbose)
        if args.command == "resume":
            return _resume(args.run_id, args.tracking_uri, args.verbose)
        if args.command == "demo":
            _write_demo_data(DEMO_DATA, seed=0, only_if_missing=True)
            return _run(DEMO_CONFIG, args.overrides, args.verbose)
        if args.command == "demo-data":
            _write_demo_data(args.out_dir, seed=args.seed, only_if_missing=False)
            return 0
        if args.command == "predict":
            return _predict(args)
        if args.command == "deploy":
            return _deploy(args.config, args.overrides)
        if args.command == "ui":
            return _ui(args)
        if args.command == "site-agent":
            return _site_agent(args.site_config)
        if args.command == "coordinator-agent":
            return _coordinator_agent()
        if args.command == "site-worker":
            raise MolfedError(
                "site-worker is gone: a Prefect worker runs whatever a deployment names; start "
                f"`molfed site-agent {args.site_config}` instead (see docs/operations.md, two-site walk-through)"
            )
        if args.command == "validate":
            return _validate(args.config, args.overrides)
        if args.command == "audit":
            from molfed.audit_cli import run_audit

            return run_audit(args)
        if args.command == "keygen" and args.coordinator_key:
            return _coordinator_keygen(args.coordinator_key, args.force)
        if args.command == "keygen":
            return _keygen(args.workspace, args.force)
        if args.command == "init":
            return _init()
    except MolfedError as exc:
        from molfed import runlog

        log = runlog.used()
        details = f" (details: {log})" if log is not None and str(log) not in str(exc) else ""
        print(f"molfed: error: {exc}{details}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("molfed: interrupted", file=sys.stderr)
        return 130
    return 2


def _start_prefect_early(verbose: bool) -> None:
    """Start Prefect's temporary API server now, so that it starts while the flow's modules import."""
    prefect_environment(verbose)
    from molfed.startup import EarlyServer, lazy_optional_imports

    lazy_optional_imports()
    global _EARLY_SERVER
    if _EARLY_SERVER is None:
        from molfed import runlog

        output = None if verbose else runlog.open_for_subprocess()  # the server's own output: to the run's log
        _EARLY_SERVER = EarlyServer.start_if_ephemeral(output=output)


_EARLY_SERVER: Any = None


def _init() -> int:
    from molfed.startup import build_mlflow_template, build_template

    prefect_environment()
    print(f"Prefect database template: {build_template()}")
    print(f"MLflow store template: {build_mlflow_template()}")
    return 0


def _write_demo_data(out_dir: Path, *, seed: int, only_if_missing: bool) -> None:
    from molfed.data.demo import DEMO_PARTNERS, write_demo_partners

    if only_if_missing and all((out_dir / f"{name}.csv").exists() for name in DEMO_PARTNERS):
        return
    paths = write_demo_partners(out_dir, seed=seed)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


def _run(config_path: Path, overrides: Sequence[str], verbose: bool) -> int:
    """Check the config and every library (one line, exit 2, on a problem), then start Prefect and run."""
    from molfed.config import load_config
    from molfed.preflight import check_run

    config = load_config(config_path, overrides)
    check_run(config)  # before Prefect or MLflow start anything
    _start_prefect_early(verbose)
    return _execute(config, verbose)


def _resume(run_id: str, tracking_uri: str | None, verbose: bool) -> int:
    """Rebuild the run's config from its MLflow artifact and continue the run from its last checkpoint."""
    prefect_environment(verbose)
    from molfed.config import parse_config
    from molfed.layout import CONFIG as CONFIG_ARTIFACT
    from molfed.tracking import Tracker, resolve_tracking_uri

    if not verbose:  # after mlflow's import, which configures its own loggers
        logging.getLogger("mlflow").setLevel(logging.ERROR)
    uri = resolve_tracking_uri(tracking_uri)
    try:
        raw = Tracker(uri, None).download_json(run_id, CONFIG_ARTIFACT)
    except Exception:
        raise MolfedError(f"run {run_id}: no {CONFIG_ARTIFACT} in {uri}; is it a molfed run in this store?") from None
    config = parse_config(raw, source=f"run {run_id} {CONFIG_ARTIFACT}")
    config = config.model_copy(update={"tracking": config.tracking.model_copy(update={"tracking_uri": uri})})
    from molfed.preflight import check_run

    check_run(config)
    return _execute(config, verbose, resume_run_id=run_id)


def _execute(config: Any, verbose: bool, resume_run_id: str | None = None) -> int:
    prefect_environment(verbose)
    started_ms = int(time.time() * 1000)
    from rich.console import Console

    from flows.federated_training import federated_training
    from molfed import progress

    if not verbose:  # after mlflow's import, which configures its own loggers
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        from molfed import runlog

        runlog.route_logging()  # Prefect's and MLflow's records (and tracebacks) to the run's log file
    from molfed.federated.strategies import QuorumError

    console = Console()
    # a terminal gets bars; a log file one plain line per round (round, loss, elapsed, ETA) as it happens
    listener: Any = _RichListener(console) if console.is_terminal else _PlainListener(sys.stdout)
    if _EARLY_SERVER is not None:
        _EARLY_SERVER.wait()
    try:
        with listener, progress.listening(listener):
            result = federated_training(config, resume_run_id)
    except QuorumError as exc:
        raise MolfedError(f"run stopped below quorum: {exc}") from None
    except MolfedError:
        raise
    except Exception as exc:
        raise _failure(exc, config, resume_run_id, started_ms) from None
    _print_results(console, result)
    return 0


class RunFailed(MolfedError):
    """An unexpected error in a run: one line naming the log file with the traceback; exit status 1."""

    exit_code = 1


def _failure(exc: Exception, config: Any, resume_run_id: str | None, started_ms: int) -> MolfedError:
    """One line for an exception out of the flow: disk full (path, space to free, the resume command), or the
    exception's type and the log file holding its traceback."""
    from molfed import runlog
    from molfed.diskspace import disk_full, disk_full_message
    from molfed.preflight import write_locations

    log = runlog.write_traceback(exc)
    full, filename = disk_full(exc)
    if full:
        run_id = resume_run_id or _latest_run_id(config, started_ms)
        return MolfedError(disk_full_message(filename, write_locations(config), run_id))
    where = f"; traceback in {log}" if log is not None else ""
    return RunFailed(f"the run failed with an unexpected {type(exc).__name__}{where}")


def _latest_run_id(config: Any, started_ms: int) -> str | None:
    """The federation run this process started (MLflow, read-only), or None."""
    try:
        from molfed.tracking import Tracker, resolve_tracking_uri

        client = Tracker(resolve_tracking_uri(config.tracking.tracking_uri), None).client
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.start_time >= {started_ms}",
            order_by=["attributes.start_time ASC"],
        )
    except Exception:  # the store may be unreadable too: then the message says "run it again"
        return None
    mine = (r for r in runs if r.info.run_name == config.name or r.info.run_name.startswith(f"{config.name} "))
    return next((r.info.run_id for r in mine), None)  # named "<config name> <start time>" (flow run_name)


class _PlainListener:
    """Progress for output that is not a terminal: :class:`molfed.progress.LineListener`'s one line per step."""

    def __init__(self, stream: Any):
        from molfed.progress import LineListener

        self.lines = LineListener(stream)
        self.stage, self.advance = self.lines.stage, self.lines.advance

    def __enter__(self) -> _PlainListener:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _RichListener:
    """Shows progress events as rich progress bars."""

    def __init__(self, console: Any):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichListener:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total, detail="")

    def advance(self, name: str, detail: str = "") -> None:
        if name not in self.tasks:
            self.console_line(f"{name}: {detail}")
            return
        self.progress.update(self.tasks[name], advance=1, detail=detail)

    def console_line(self, text: str) -> None:
        self.progress.console.print(f"[dim]{text}[/dim]")


def _print_results(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    metric, kinds = result["metric"], result["kinds"]
    table = Table(title=f"Test {metric} on each partner's own scaffold test split")
    table.add_column("partner")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for row in result["rows"]:
        table.add_row(row["partner"], *(f"{row[k]:.3f}" if row.get(k) is not None else "–" for k in kinds))
    console.print(table)
    total = time.monotonic() - _PROCESS_START
    model = f"; model {result['model_uri']}" if result.get("model_uri") else ""
    if result.get("model_version"):
        model += f" registered as {result['registered_model']} v{result['model_version']}"
    # plain print: rich would wrap these at 80 columns in a log, and commands must paste whole
    print(f"Finished in {total:.1f} s (federation {result['seconds']:.1f} s). MLflow run {result['run_id']}{model}")
    for line in ui_hints(result["tracking_uri"], result.get("experiment_id", ""), result["run_id"]):
        print(line)


def ui_hints(tracking_uri: str, experiment_id: str, run_id: str) -> list[str]:
    """How to look at a finished run: the ``molfed ui`` command (absolute paths, one line) and the run's address."""
    from molfed.startup import prefect_home

    home = shlex.quote(str(prefect_home().resolve()))
    molfed = shlex.quote(str(Path(sys.executable).parent / "molfed"))
    lines = [
        "Open the Prefect and MLflow UIs on these runs (Ctrl-C stops both):",
        f"  PREFECT_HOME={home} {molfed} ui --tracking-uri {shlex.quote(tracking_uri)}",
    ]
    if not tracking_uri.startswith(("http://", "https://")):
        lines += ["then this run:", f"  http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"]
    return lines


def _deploy(config_path: Path, overrides: Sequence[str]) -> int:
    from molfed.config import load_config

    config = load_config(config_path, overrides)
    prefect_environment()
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise MolfedError(
            "deploy needs a Prefect server: start one with `molfed ui` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    from flows.deploy import deploy, deployed_config

    config = deployed_config(config)
    for name in deploy(config):
        print(f"deployed {name}")
    for line in next_steps(config, api):
        print(line)
    return 0


def next_steps(config: Any, api_url: str) -> list[str]:
    """What to start after ``molfed deploy``: one pasteable command per line (absolute paths)."""
    from molfed.startup import store_uri

    cwd, bin_dir = shlex.quote(str(Path.cwd())), Path(sys.executable).parent
    env = f"PREFECT_API_URL={shlex.quote(api_url)}"
    ui = api_url.removesuffix("/").removesuffix("/api")
    lines = [
        "",
        "Next, in a terminal that stays open: the coordinator agent runs the deployment's flow runs",
        f"  cd {cwd} && {env} {shlex.quote(str(bin_dir / 'molfed'))} coordinator-agent",
    ]
    if config.mode == "sites":
        tracking = shlex.quote(store_uri(config.tracking.tracking_uri))
        lines.append("At each partner's site, with its own site config (see docs/operations.md#sites-mode):")
        lines += [
            f"  {env} MLFLOW_TRACKING_URI={tracking} molfed site-agent SITE_CONFIG.yaml   # partner {p.name}"
            for p in config.partners
        ]
    lines += [
        "Then start a run from the form (Deployments > federated-training > Run > Custom run):",
        f"  {ui}/deployments",
        "or from this terminal:",
        f"  {env} {shlex.quote(str(bin_dir / 'prefect'))} deployment run federated-training/federated-training",
        "Runs log to MLflow store:",
        f"  {config.tracking.tracking_uri}",
    ]
    return lines


def _ui(args: argparse.Namespace) -> int:
    """Start both UIs, print their addresses, wait for Ctrl-C / SIGTERM, stop both."""
    import signal
    import threading

    from molfed import runlog
    from molfed.startup import UiServers, prefect_home, store_uri

    servers = UiServers(
        tracking_uri=store_uri(args.tracking_uri),
        home=prefect_home(),
        host=args.host,
        prefect_port=args.prefect_port,
        mlflow_port=args.mlflow_port,
        services=args.services,
        output=runlog.open_for_subprocess(),
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.perf_counter()
    try:
        servers.start()
        print(f"starting Prefect (home {servers.home}) and MLflow (store {servers.tracking_uri}) ...", flush=True)
        if not servers.wait(cancel=stop):
            return 130
        print(f"ready in {time.perf_counter() - started:.0f} s; Ctrl-C stops both", flush=True)
        print("Prefect UI:", flush=True)
        print(f"  {servers.prefect_url}", flush=True)
        print("MLflow UI:", flush=True)
        print(f"  {servers.mlflow_url}", flush=True)
        print("Point molfed deploy / coordinator-agent at this Prefect server with:", flush=True)
        print(f"  export PREFECT_API_URL={servers.prefect_url}/api", flush=True)
        while not stop.wait(0.5):
            if not servers.alive():
                raise MolfedError("a UI server exited; its output is in the log file " + str(runlog.used()))
    finally:
        servers.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped Prefect and MLflow UIs", flush=True)
    return 0


def _coordinator_agent() -> int:
    prefect_environment(verbose=True)
    if not os.environ.get("PREFECT_API_URL"):
        raise MolfedError("coordinator-agent needs the federation's Prefect server: set PREFECT_API_URL")
    from flows.coordinator_agent import main as serve

    serve()
    return 0


def _site_agent(site_config: Path) -> int:
    """Validate the site config, then serve pool ``partner-<name>`` until interrupted."""
    from molfed.config import load_site_config

    site = load_site_config(site_config)
    prefect_environment(verbose=True)
    if not os.environ.get("PREFECT_API_URL"):
        raise MolfedError("site-agent needs the federation's Prefect server: set PREFECT_API_URL")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise MolfedError("site-agent needs the federation's MLflow server: set MLFLOW_TRACKING_URI")
    from flows.site_agent import main as serve

    serve(site)
    return 0


def _predict(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # quiet: no download bars
    import pandas as pd

    from molfed.errors import InputError

    path: Path = args.input
    if not path.is_file():
        raise InputError(
            "input file not found" if not path.exists() else "is a directory, expected a file", path=str(path)
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read CSV ({type(exc).__name__})", path=str(path)) from None
    if args.smiles_column not in frame.columns:
        raise InputError(
            f"column not found; columns are {list(frame.columns)}", path=str(path), column=args.smiles_column
        )
    try:
        predict = _load_predictor(args.model, args.tracking_uri)  # weights + JSON only: runs no code from the store
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise MolfedError(f"cannot load model {args.model!r}: {type(exc).__name__}: {reason}") from None
    with _inference_threads():
        preds = predict(pd.DataFrame({"smiles": frame[args.smiles_column]}))
    out = pd.concat([frame.reset_index(drop=True), preds.reset_index(drop=True)], axis=1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.output, index=False)
    invalid = [i for i, ok in enumerate(preds["valid"].tolist()) if not ok]
    rejects = _predict_rejects(frame[args.smiles_column].tolist(), invalid, args.smiles_column)
    counts = Counter(r.reason for r in rejects)
    text = f"wrote {len(out)} predictions ({len(invalid)} invalid SMILES"
    if rejects:
        from molfed.data.library import write_rejects

        report = write_rejects(rejects, args.output.with_name(f"{args.output.stem}.rejects.csv"))
        text += ": " + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) + f"; rows in {report}"
    print(f"{text}) to {args.output}")
    return 0


@contextlib.contextmanager
def _inference_threads() -> Iterator[None]:
    """One torch thread for prediction, unless ``$OMP_NUM_THREADS`` says otherwise; restored afterwards.

    Batches of small molecular graphs are too small for torch's intra-op thread pool: on a 2-core machine with other
    work running, 1,000 SMILES took 0.26-3 s of inference with torch's default 2 threads and 0.05-0.15 s with one
    (the pool's threads wait for a busy core). At ~0.05 s per 1,000 molecules on one thread, more threads have
    little to win; standardization (~0.3 s per 1,000, single-threaded) costs more.
    """
    import torch

    before = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load_predictor(model: str, tracking_uri: str | None) -> Callable[[Any], Any]:
    """``frame -> predictions`` for a local model directory (without importing MLflow, ~2 s) or an MLflow URI."""
    if Path(model).is_dir():
        from molfed.model_files import load_model_dir

        loaded = load_model_dir(Path(model))
        if tracking_uri is not None:
            print(f"molfed: note: --tracking-uri is not used: {model} is a model directory", file=sys.stderr)
        return loaded.predict
    from molfed.tracking import load_model

    pyfunc = load_model(model, tracking_uri)
    return lambda frame: pyfunc.predict(None, frame)


def _predict_rejects(smiles: Sequence[str], invalid: Sequence[int], column: str) -> list[Any]:
    """A :class:`~molfed.data.library.Reject` per invalid input row (row = CSV line, header = 1), with its reason."""
    from molfed.chem.standardize import parse_smiles, reason_detail
    from molfed.data.library import Reject

    rejects = []
    for i in invalid:
        text = smiles[i]
        _, reason = parse_smiles(text)
        detail = reason_detail(text) if reason not in (None, "empty_smiles") else ""
        rejects.append(Reject(i + 2, reason or "unstandardizable_molecule", column, detail))
    return rejects


def _validate(config_path: Path, overrides: Sequence[str]) -> int:
    """Load the config and read each partner's library as the flow does; print counts, never data.

    Writes ``<workspace>/rejects.csv`` per partner. Stops at the first unusable config or library (exit 2).
    No Prefect, no MLflow, no featurization.
    """
    from molfed.config import load_config

    config = load_config(config_path, overrides)  # before the chemistry imports: a config error returns fast
    from molfed.chem.standardize import StandardizeOptions
    from molfed.data.library import read_library, write_rejects

    if config.mode == "sites":
        raise MolfedError(f"{config_path}: sites mode names partners only; each partner validates its own library")
    from molfed.preflight import check_distinct_libraries

    check_distinct_libraries(config)
    options = StandardizeOptions(**config.data.standardize.model_dump())
    for partner in config.partners:
        assert partner.path is not None  # required in local mode
        library = read_library(
            partner.path,
            smiles_column=partner.smiles_column,
            label_columns=[partner.column_for(t.name) for t in config.tasks],
            task_types=[t.type for t in config.tasks],
            standardize=options,
            duplicates=config.data.duplicates,
            partner=partner.name,
        )
        report = write_rejects(
            library.report_rows(), config.workspace_for(partner) / "rejects.csv", partner=partner.name
        )
        counts = ", ".join(f"{reason} {n}" for reason, n in library.reject_counts().items())
        disagreeing = f", disagreeing duplicates {len(library.notes)} (kept as the mean)" if library.notes else ""
        print(
            f"partner {partner.name!r}: rows read {library.n_input_rows}, molecules kept {len(library)}, "
            f"duplicates merged {library.n_duplicates_merged}{disagreeing}, rejected {len(library.rejects)}"
            + (f" ({counts})" if counts else "")
            + f"; report {report}"
        )
    n = len(config.partners)
    print(f"{config_path}: OK ({n} partner{'' if n == 1 else 's'})")
    return 0


def _keygen(workspace: Path, force: bool) -> int:
    from molfed.federated.keys import PRIVATE_FILE, write_keypair

    public = write_keypair(workspace, overwrite=force)
    print(f"private key written to {workspace / PRIVATE_FILE} (keep it at this site)", file=sys.stderr)
    print("add this public key to the coordinator's config under integrity.public_keys.<partner>:", file=sys.stderr)
    print(public)
    return 0


def _coordinator_keygen(path: Path, force: bool) -> int:
    from molfed.federated.keys import write_private_key

    public = write_private_key(path, overwrite=force)
    print(
        f"private key written to {path} (keep it with the coordinator; set integrity.coordinator_key)", file=sys.stderr
    )
    print("add this public key to each site config under trusted_coordinators.<name>:", file=sys.stderr)
    print(public)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
