"""molfed.startup: when the early Prefect server may start, and the deferred optional import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from molfed import startup
from tasks.partner import threads_per_partner


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No Prefect imported, no Prefect variables, an empty PREFECT_HOME and working directory."""
    monkeypatch.delitem(sys.modules, "prefect", raising=False)
    for key in (*startup._SETTINGS, "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_starts_early_only_when_prefect_would_start_an_ephemeral_server(clean, monkeypatch):
    assert not startup._configured_elsewhere()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert startup._configured_elsewhere()


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("home/profiles.toml", 'active = "local"\n[profiles.local]\nPREFECT_API_URL = "http://x:4200/api"\n'),
        ("home/profiles.toml", '[profiles.ephemeral]\nPREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "false"\n'),
        ("home/profiles.toml", "not toml ["),
        ("prefect.toml", "[api]\n"),
        (".env", "PREFECT_API_URL=http://x:4200/api\n"),
        ("pyproject.toml", "[tool.prefect.api]\nurl = 'http://x'\n"),
        ("pyproject.toml", "[tool.prefect.server.ephemeral]\nenabled = false\n"),
        ("pyproject.toml", "[tool.prefect.server]\nallow_ephemeral_mode = false\n"),
    ],
)
def test_any_other_prefect_configuration_wins(clean, where, text):
    path = clean / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    assert startup._configured_elsewhere()


def test_our_own_pyproject_prefect_settings_do_not_block(clean):
    """molfed's pyproject.toml sets analytics and the start-up timeout only: `molfed run` in the repo starts early."""
    (clean / "pyproject.toml").write_text(
        "[tool.prefect.server]\nanalytics_enabled = false\n"
        "[tool.prefect.server.ephemeral]\nstartup_timeout_seconds = 180\n"
    )
    assert not startup._configured_elsewhere()


def test_a_profile_without_api_settings_does_not_block(clean):
    (clean / "home").mkdir()
    (clean / "home" / "profiles.toml").write_text(
        'active = "ephemeral"\n[profiles.ephemeral]\nPREFECT_LOGGING_LEVEL = "INFO"\n'
        '[profiles.local]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
    )
    assert not startup._configured_elsewhere()


def test_deferred_rfc3987_import_keeps_iri_validation():
    code = (
        "import sys; from molfed.startup import lazy_optional_imports; lazy_optional_imports()\n"
        "import jsonschema\n"
        "assert 'lark' not in sys.modules  # the grammar is not built at import\n"
        "check = jsonschema.FormatChecker()\n"
        "print(check.conforms('http://example.org/\\u00e9', 'iri'), check.conforms('not an iri', 'iri'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # without tests/_boot's sitecustomize
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]


@pytest.mark.parametrize(("concurrent", "cores", "expected"), [(1, 8, 8), (3, 8, 2), (20, 8, 1), (0, 2, 2)])
def test_partner_tasks_share_the_cores(monkeypatch, concurrent, cores, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert threads_per_partner(concurrent) == expected


def test_template_database_is_migrated_and_seeds_only_a_home_without_one(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.setattr(startup, "template_path", lambda: tmp_path / "share" / "prefect-x.db")
    home = tmp_path / "home"
    assert not startup.seed_prefect_database(home) and not home.exists()  # no template yet: nothing happens

    template = startup.build_template()  # Prefect's real migrations, in a subprocess
    with sqlite3.connect(template) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert revision and {"flow", "flow_run", "task_run", "deployment"} <= tables
    assert not list(template.parent.glob(".*.tmp"))

    assert startup.seed_prefect_database(home)
    assert (home / "prefect.db").read_bytes() == template.read_bytes()
    assert [p.name for p in home.iterdir()] == ["prefect.db"]  # no partial copy left behind

    (home / "prefect.db").write_bytes(b"someone's database")
    assert not startup.seed_prefect_database(home)  # an existing database is never replaced
    assert (home / "prefect.db").read_bytes() == b"someone's database"

    other = tmp_path / "other"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    assert not startup.seed_prefect_database(other) and not other.exists()  # Prefect's database is elsewhere


def test_a_new_embedded_mlflow_store_starts_from_the_template(tmp_path):
    """``molfed init`` keeps a migrated MLflow store; a new ``sqlite:///`` store starts as its copy (no migrations),
    works, and keeps the Default experiment's artifacts in the store's own folder; an existing store is untouched."""
    from molfed.startup import build_mlflow_template, mlflow_template_path, seed_mlflow_store
    from molfed.tracking import Tracker

    if not mlflow_template_path().is_file():
        build_mlflow_template()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert seed_mlflow_store(uri)
    assert not seed_mlflow_store(uri)  # exists now: left alone
    tracker = Tracker(uri, "t")
    run_id = tracker.start_run("r")
    tracker.log_metrics(run_id, {"m": 1.0}, step=1)
    assert tracker.client.get_run(run_id).data.metrics == {"m": 1.0}
    assert tracker.client.get_experiment("0").artifact_location == (tmp_path / "artifacts").as_uri() + "/0"
    assert not seed_mlflow_store(f"sqlite:///{tmp_path / 'missing-folder' / 'mlflow.db'}")
