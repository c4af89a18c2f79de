"""A faster start for ``molfed run``: Prefect's API server starts in the background while molfed imports.

Without a configured Prefect API, Prefect starts a temporary ("ephemeral") API server the first time a flow needs
it: a ``uvicorn`` subprocess that imports Prefect's server and migrates its SQLite database, 20–90 s on a loaded
2-core machine, during which the flow waits. :class:`EarlyServer` starts the very same subprocess (same command,
same ``PREFECT__SERVER_EPHEMERAL`` environment, same ``PREFECT_HOME`` database) at CLI entry, *before* torch, PyG,
MLflow and Prefect are imported, and points ``PREFECT_API_URL`` at it, so the server's start and our imports run
side by side; :meth:`EarlyServer.wait` blocks until it answers. It stops when the process exits, as Prefect's does.

A new ``PREFECT_HOME`` would also make that server run Prefect's database migrations (~13 CPU-s here: alembic
rebuilding SQLite tables). ``molfed init`` (run by ``make setup``) runs them once per installed Prefect version into
an empty template database kept in the environment (:func:`template_path`); :func:`seed_prefect_database` copies it
into a ``PREFECT_HOME`` that has no database yet, so Prefect finds its migrations done (on a later Prefect the
template has another name, so it is not used until ``molfed init`` runs again; an older one would just be migrated).

Whenever Prefect could be configured elsewhere (``PREFECT_API_URL`` set, a Prefect profile or settings file that
names an API or switches the ephemeral mode, or Prefect already imported), nothing is started and Prefect behaves
as it always does.

This module imports neither Prefect nor anything heavy.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import types
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from molfed.errors import MolfedError

_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
"""What Prefect's ``SubprocessASGIServer`` sets for its ephemeral server (prefect/server/api/server.py)."""
_PORTS = range(8000, 9000)  # Prefect's ephemeral port range
_PORT_IN_USE = 3  # uvicorn's exit status when the port is taken (also for any other failed start-up)
_LAUNCHES = 3  # server launches on fresh ports before giving up
_PARENT_VARIABLE = "MOLFED_SERVER_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SETTINGS = ("PREFECT_API_URL", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "PREFECT_SERVER_EPHEMERAL_ENABLED")
_DATABASE_SETTINGS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
_MIGRATE = (
    "import asyncio; from prefect.server.database import provide_database_interface as db; "
    "asyncio.run(db().create_db())"
)


def lazy_optional_imports() -> None:
    """Defer ``rfc3987_syntax``'s import to its first use.

    jsonschema (imported by Prefect) imports this optional package for its ``iri`` format checker only, and its
    import builds an Earley parser from a grammar: ~3 s of CPU in every process that imports Prefect. The stand-in
    imports the real module on the first ``is_valid_syntax`` call, so validation is unchanged.
    """
    name = "rfc3987_syntax"
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    stub = types.ModuleType(name)

    def is_valid_syntax(*args: Any, **kwargs: Any) -> Any:
        del sys.modules[name]
        real = importlib.import_module(name)
        return real.is_valid_syntax(*args, **kwargs)

    stub.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    sys.modules[name] = stub


def prefect_home() -> Path:
    """``PREFECT_HOME`` as Prefect resolves it by default."""
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def template_path() -> Path:
    """Where ``molfed init`` keeps the empty, migrated Prefect database for the installed Prefect version."""
    return Path(sys.prefix) / "share" / "molfed" / f"prefect-{importlib.metadata.version('prefect')}.db"


def build_template() -> Path:
    """Run Prefect's migrations on an empty database in a scratch ``PREFECT_HOME`` (a subprocess, so it works
    whether or not Prefect is imported here) and keep the result as :func:`template_path`.

    Raises
    ------
    MolfedError
        If the migrations fail.
    """
    target = template_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="molfed-prefect-template-") as scratch:
        env = {**os.environ, "PREFECT_HOME": scratch}
        for name in _DATABASE_SETTINGS:
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-c", _MIGRATE], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise MolfedError(f"Prefect's database migrations failed:\n{done.stderr[-2000:]}")
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        # SQLite's backup copies a consistent database, write-ahead log included (Prefect uses WAL mode).
        with closing(sqlite3.connect(Path(scratch) / "prefect.db")) as src, closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
        os.replace(partial, target)
    return target


_MLFLOW_CREATE = (
    "import sys; from mlflow import MlflowClient; "
    "MlflowClient(tracking_uri='sqlite:///' + sys.argv[1]).search_experiments()"
)


def mlflow_template_path() -> Path:
    """Where ``molfed init`` keeps an empty, migrated MLflow SQLite store for the installed MLflow version."""
    return Path(sys.prefix) / "share" / "molfed" / f"mlflow-{importlib.metadata.version('mlflow')}.db"


def build_mlflow_template() -> Path:
    """Create MLflow's tables in an empty SQLite store (a subprocess) and keep it as :func:`mlflow_template_path`:
    a new embedded store then starts as a copy instead of running MLflow's migrations (~2 s).

    Raises
    ------
    MolfedError
        If MLflow cannot create the store.
    """
    target = mlflow_template_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="molfed-mlflow-template-") as scratch:
        db = Path(scratch) / "mlflow.db"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        done = subprocess.run([sys.executable, "-c", _MLFLOW_CREATE, str(db)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise MolfedError(f"MLflow could not create its tables:\n{done.stderr[-2000:]}")
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
        os.replace(partial, target)
    return target


def seed_mlflow_store(uri: str) -> bool:
    """Start a new embedded store (``sqlite:///<path>`` whose file does not exist yet) as a copy of the template;
    True if copied. Its Default experiment then keeps artifacts in the store's ``artifacts`` folder, as molfed's
    own experiments do. Nothing happens without a template (``molfed init`` not run) or for other stores."""
    if not uri.startswith("sqlite:///"):
        return False
    target = Path(uri.removeprefix("sqlite:///"))
    template = mlflow_template_path()
    if target.exists() or not template.is_file() or not target.parent.is_dir():
        return False
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(template, partial)
    with closing(sqlite3.connect(partial)) as con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (f"{_artifact_root(uri)}/0",)
        )
        con.commit()
    try:
        os.link(partial, target)  # fails if another process created the store meanwhile: theirs wins
    except FileExistsError:
        return False
    finally:
        partial.unlink()
    return True


def seed_prefect_database(home: Path) -> bool:
    """Copy the template database into ``home`` if it has no ``prefect.db`` yet; True if copied.

    Nothing happens without a template (``molfed init`` not run) or when a database URL is set in the environment.
    The copy lands under a temporary name first, so Prefect never sees half a database.
    """
    target = home / "prefect.db"
    template = template_path()
    if target.exists() or not template.is_file() or any(k in os.environ for k in _DATABASE_SETTINGS):
        return False
    home.mkdir(parents=True, exist_ok=True)
    partial = home / f".prefect.db.{os.getpid()}.tmp"
    shutil.copyfile(template, partial)
    os.replace(partial, target)
    return True


def _configured_elsewhere() -> bool:
    """True when Prefect's API or ephemeral mode may be set by anything but molfed's defaults (be conservative)."""
    if "prefect" in sys.modules or any(k in os.environ for k in _SETTINGS) or os.environ.get("PREFECT_PROFILE"):
        return True
    home = prefect_home()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    if profiles.exists():
        try:
            doc = tomllib.loads(profiles.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return True
        active = doc.get("profiles", {}).get(doc.get("active", "ephemeral"), {})
        if any(k in active for k in _SETTINGS):
            return True
    cwd = Path.cwd()
    if (cwd / "prefect.toml").exists():
        return True
    try:
        if "PREFECT_" in (cwd / ".env").read_text(errors="replace"):
            return True
    except OSError:
        pass
    return _pyproject_sets_api(cwd / "pyproject.toml")


def _pyproject_sets_api(path: Path) -> bool:
    """True when ``[tool.prefect]`` in ``path`` names an API URL or the ephemeral mode (other keys are harmless)."""
    try:
        prefect = tomllib.loads(path.read_text()).get("tool", {}).get("prefect", {})
    except OSError:
        return False
    except tomllib.TOMLDecodeError:
        return True
    server = prefect.get("server", {})
    ephemeral = server.get("ephemeral", {})
    return "api" in prefect or "allow_ephemeral_mode" in server or "enabled" in ephemeral


def _free_port() -> int:
    for _ in range(20):
        port = random.choice(_PORTS)
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise MolfedError("no free port in 8000-8999 for Prefect's temporary API server")


class EarlyServer:
    """Prefect's ephemeral API server, started before Prefect is imported (see the module docstring)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.output: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start_if_ephemeral(cls, output: IO[bytes] | None = None) -> EarlyServer | None:
        """Start the server and set ``PREFECT_API_URL`` when Prefect would start an ephemeral one; else None.

        ``output``: a file for the server's stdout and stderr (default: this process's console)."""
        if _configured_elsewhere():
            return None
        server = cls()
        server._lock = _start_lock(prefect_home())  # held until this server answers: see _start_lock
        seed_prefect_database(prefect_home())
        server.output = output
        server._launch(output)
        os.environ["PREFECT_API_URL"] = server.api_url
        atexit.register(server.stop)
        return server

    def _launch(self, output: IO[bytes] | None = None) -> None:
        self.port = _free_port()
        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.origin is not None, "Prefect is a molfed dependency"
        app_dir = str(Path(spec.origin).parent.parent)
        args = ["--app-dir", app_dir, "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        code = "from molfed.startup import serve; serve()"
        env = {**os.environ, **_SERVER_ENV, _PARENT_VARIABLE: str(os.getpid())}
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=output, stderr=output)

    def wait(self) -> None:
        """Block until the server answers ``/health`` (timeout: ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``).

        Raises
        ------
        MolfedError
            If it exits or does not answer in time.
        """
        try:
            self._wait()
        finally:
            self._release_lock()

    def _wait(self) -> None:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        deadline = time.monotonic() + timeout
        assert self.process is not None
        tries = 1
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == _PORT_IN_USE and tries < _LAUNCHES:  # another process took the port after _free_port
                tries += 1
                self._launch(self.output)
                os.environ["PREFECT_API_URL"] = self.api_url
                continue
            if code is not None:
                why = f"exit status {code}" + (": its port was taken, or it failed to start" if code == 3 else "")
                where = f"; its output is in {self.output.name}" if self.output is not None else ""
                raise MolfedError(f"Prefect's temporary API server exited while starting ({why}){where}; run again")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise MolfedError(
            f"Prefect's temporary API server did not answer within {timeout:.0f} s "
            "(raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def stop(self) -> None:
        """Terminate the server (at exit)."""
        self._release_lock()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start_lock(home: Path) -> IO[bytes] | None:
    """Wait for any other molfed process starting a server on this ``PREFECT_HOME``, then hold the lock.

    Two first runs in one folder used to start together: both servers registered Prefect's block types in the same
    new SQLite database at once (UNIQUE-constraint tracebacks, or a failed start, exit status 3, which read as "port
    taken"). The lock (``flock`` on ``<home>/.molfed-server.lock``) is held from seeding the database until the
    server answers, so the second server starts on a ready database. The OS releases it if the holder dies.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    try:
        home.mkdir(parents=True, exist_ok=True)
        handle = (home / ".molfed-server.lock").open("ab")
    except OSError:
        return None  # an unwritable home: Prefect reports it
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


def _die_with_parent() -> None:
    """Make this server process exit when the ``molfed`` process that started it dies, even by SIGKILL.

    On Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` has the kernel send SIGTERM (uvicorn then shuts down); elsewhere, and
    as a second line, a daemon thread polls the parent pid every half second. If the parent already died before the
    call, the server exits at once.
    """
    parent = int(os.environ.get(_PARENT_VARIABLE, "0") or 0)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="molfed-parent-watch", daemon=True).start()


def serve() -> None:
    """The server subprocess's entry: ``python -m uvicorn`` with :func:`lazy_optional_imports` first; it exits
    when its parent dies (:func:`_die_with_parent`)."""
    _die_with_parent()
    lazy_optional_imports()
    from uvicorn.main import main

    main()


def store_uri(configured: str | None = None, *, root: Path | None = None) -> str:
    """The MLflow tracking URI molfed uses: ``configured``, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite
    store ``<root or cwd>/mlruns/mlflow.db`` as an absolute URI (the folder is created). Imports no MLflow."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = (root or Path.cwd()).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


class UiServers:
    """``molfed ui``: Prefect's server (API + UI) on this project's ``PREFECT_HOME`` and MLflow's UI on its store, as
    child processes in their own process groups, stopped together (:meth:`stop`; also when this process dies).

    Prefect's database starts from ``molfed init``'s template (:func:`seed_prefect_database`), so a new home costs no
    migrations; the server runs without its background services (scheduler, late runs), which viewing runs and the
    deployment form do not need (``services=True`` for schedules)."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        home: Path,
        host: str = "127.0.0.1",
        prefect_port: int = 4200,
        mlflow_port: int = 5000,
        services: bool = False,
        output: IO[bytes] | None = None,
    ) -> None:
        self.tracking_uri, self.home, self.host = tracking_uri, home.resolve(), host
        self.prefect_port, self.mlflow_port, self.services, self.output = prefect_port, mlflow_port, services, output
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def commands(self) -> dict[str, list[str]]:
        """The two server command lines."""
        prefect = [sys.executable, "-m", "prefect", "server", "start", "--host", self.host]
        prefect += ["--port", str(self.prefect_port)] + ([] if self.services else ["--no-services"])
        mlflow = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.tracking_uri]
        artifacts = _artifact_root(self.tracking_uri)
        mlflow += ["--default-artifact-root", artifacts] if artifacts else []
        mlflow += ["--host", self.host, "--port", str(self.mlflow_port)]
        return {"prefect": prefect, "mlflow": mlflow}

    def start(self) -> UiServers:
        """Start both servers (not waiting for them: :meth:`wait`)."""
        for port in (self.prefect_port, self.mlflow_port):
            _check_port_free(self.host, port)
        seed_prefect_database(self.home)
        env = {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env["DO_NOT_TRACK"] = "1"
        if self.host not in ("0.0.0.0", "::"):  # a browser reaches the API where the UI came from
            env["PREFECT_UI_API_URL"] = f"{self.prefect_url}/api"
        env.pop("PREFECT_API_URL", None)  # the server's own clients talk to itself
        for name, command in self.commands().items():
            self.processes[name] = subprocess.Popen(
                command,
                env=env,
                stdout=self.output,
                stderr=self.output,
                start_new_session=True,  # its own group: Ctrl-C reaches molfed, which stops the whole group
                preexec_fn=_exit_with_parent,
            )
        return self

    def wait(self, timeout: float = 180.0, cancel: threading.Event | None = None) -> bool:
        """Block until both answer their health endpoints; False if ``cancel`` was set first (Ctrl-C).

        Raises
        ------
        MolfedError
            If one exits or does not answer within ``timeout`` seconds.
        """
        health = {"prefect": f"{self.prefect_url}/api/health", "mlflow": f"{self.mlflow_url}/health"}
        deadline = time.monotonic() + timeout
        pending = dict(health)
        while pending:
            if cancel is not None and cancel.is_set():
                return False
            for name, url in list(pending.items()):
                code = self.processes[name].poll()
                if code is not None:
                    where = f"; its output is in {self.output.name}" if self.output is not None else ""
                    raise MolfedError(f"the {name} server exited while starting (exit status {code}){where}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            del pending[name]
                except (urllib.error.URLError, OSError):
                    pass
            if pending and time.monotonic() > deadline:
                raise MolfedError(f"{', '.join(pending)} did not answer within {timeout:.0f} s")
            if pending:
                time.sleep(0.2)
        return True

    def alive(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes.values())

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate both process groups (SIGTERM, then SIGKILL after ``timeout`` s) and reap them."""
        for process in self.processes.values():
            if process.poll() is None:
                with _ignore_lookup():
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with _ignore_lookup():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            with _ignore_lookup():  # workers the server forked and left behind
                os.killpg(process.pid, signal.SIGKILL)


class _ignore_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError | PermissionError)


def _artifact_root(uri: str) -> str | None:
    """The embedded store's artifact folder (``<store>/artifacts``) as a file URI; None for other stores."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def _check_port_free(host: str, port: int) -> None:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise MolfedError(
                f"port {port} on {host} is in use; choose another (--prefect-port/--mlflow-port)"
            ) from None


def _exit_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when molfed dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
