"""What the leak audit scans, and the partner-side index of what it looks for.

:func:`partner_index` runs on the partner's side (it reads the library); :func:`mlflow_roots` and
:func:`prefect_roots` locate the stores from the tracking URI and ``PREFECT_HOME`` without starting either tool.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from rdkit import Chem, rdBase

from molfed.audit import HashIndex, structure_needles
from molfed.chem.standardize import StandardizeOptions
from molfed.data.library import DuplicatePolicy, TaskType, read_library
from molfed.data.readers import read_records
from molfed.errors import MolfedError
from molfed.startup import prefect_home


def partner_index(
    name: str,
    path: Path,
    *,
    smiles_column: str,
    label_columns: Sequence[str],
    task_types: Sequence[TaskType],
    standardize: StandardizeOptions,
    duplicates: DuplicatePolicy,
    salt: bytes | None = None,
) -> HashIndex:
    """Salted index of a partner's raw SMILES, their canonical SMILES and InChIKeys, and the standardized forms.

    Raises
    ------
    InputError
        If the library cannot be read (as in a federation run).
    """
    _, records = read_records(path, smiles_column, label_columns, name)
    raw: list[str] = []
    with rdBase.BlockLogs():
        for r in records:
            if isinstance(r.structure, str):
                raw.append(r.structure)
            elif r.structure is not None:  # SDF: a molecule
                raw.append(Chem.MolToSmiles(r.structure))
    texts, keys = structure_needles(raw)
    library = read_library(
        path,
        smiles_column=smiles_column,
        label_columns=label_columns,
        task_types=task_types,
        standardize=standardize,
        duplicates=duplicates,
        partner=name,
    )
    texts = sorted(set(texts) | {s for s in library.smiles if len(s) >= 6})
    keys = sorted(set(keys) | {k for k in library.inchikeys if k})
    return HashIndex.build(name, texts, keys, salt)


def default_tracking_uri() -> str:
    """As :func:`molfed.tracking.resolve_tracking_uri` without a configured URI, but creating nothing."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlruns' / 'mlflow.db'}"


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def mlflow_roots(tracking_uri: str) -> list[Path]:
    """The SQLite database and every local artifact location it names (experiments, runs, logged models).

    Raises
    ------
    MolfedError
        If the URI is not a local SQLite or file store (a remote server must be audited where its store lives).
    """
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise MolfedError(f"audit: MLflow database {db} not found (tracking URI {tracking_uri})")
        roots = [db, db.parent / "artifacts"]
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            for query in (
                "SELECT artifact_location FROM experiments",
                "SELECT artifact_uri FROM runs",
                "SELECT artifact_location FROM logged_models",
            ):
                try:
                    roots += [p for (uri,) in conn.execute(query) if uri and (p := _local_path(uri)) is not None]
                except sqlite3.Error:
                    continue  # an older schema without this table
        finally:
            conn.close()
        return _outermost(roots)
    path = _local_path(tracking_uri)
    if path is not None:
        return [path]
    raise MolfedError(
        f"audit: tracking URI {tracking_uri!r} is not a local store; run the audit where the server's SQLite "
        "database and artifact root live"
    )


def prefect_roots(home: Path | None = None) -> list[Path]:
    """``PREFECT_HOME`` (database, result storage, logs) and a SQLite database configured elsewhere."""
    roots = [home or prefect_home()]
    url = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "")
    if "sqlite" in url and ":///" in url:
        roots.append(Path(url.split(":///", 1)[1]))
    storage = os.environ.get("PREFECT_LOCAL_STORAGE_PATH")
    if storage:
        roots.append(Path(storage).expanduser())
    return _outermost(roots)


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """Existing paths, resolved, without those inside another one."""
    resolved = sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts))
    out: list[Path] = []
    for p in resolved:
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out
