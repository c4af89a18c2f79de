"""Attack: whoever can write the MLflow store booby-traps a molfed model, and a chemist runs ``molfed predict`` on it
(through the registry, or on the model's directory as downloaded).

A real molfed model is logged into a temporary SQLite store (``Tracker.log_model``, registered, aliased); then, as
the adversary, its ``python_model.pkl`` is replaced by a pickle that writes a marker file when unpickled and still
returns a working model, so only the marker gives it away. ``molfed predict`` must give the model's true
predictions, leave the marker unwritten, and not even open anything of the model but ``artifacts/weights.pt`` and
``artifacts/model.json`` (not ``python_model.pkl``, not the logged ``code/`` copy of molfed).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import torch

from molfed.chem.standardize import StandardizeOptions
from molfed.cli import main
from molfed.federated.coordinator import initial_weights, model_spec
from molfed.federated.partner import materialize
from molfed.serving import predict_smiles
from molfed.tracking import Tracker

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "not a smiles", "OC(=O)CCc1ccccc1"]
SCALING = {"mean": [-3.0, 0.0], "std": [2.5, 1.0]}
NAME = "molfed-victim"

# -- recording which files this process opens (audit hooks cannot be removed: one, switched on and off) --------------
_opened: list[str] | None = None
_lock = threading.Lock()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str):
        with _lock:
            _opened.append(os.path.abspath(args[0]))


sys.addaudithook(_audit)


@contextmanager
def recording_opens() -> Iterator[list[str]]:
    global _opened
    _opened = seen = []
    try:
        yield seen
    finally:
        _opened = None


# -- the adversary's files --------------------------------------------------------------------------------------------
class _PickleTrap:
    """Unpickles into a working ``MoleculePyfunc`` after writing ``marker``: a quiet takeover."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        source = (
            f"(__import__('pathlib').Path({str(self.marker)!r}).write_text('pickle ran'),"
            " __import__('molfed.tracking', fromlist=['MoleculePyfunc']).MoleculePyfunc())[1]"
        )
        return (eval, (source,))


def _local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def _log_model(tracker: Tracker, spec, weights, registered: str) -> tuple[str, str, Path]:
    """Log and register a molfed model; returns (run id, logged model uri, the model's directory in the store)."""
    run_id = tracker.start_run("victim")
    options = StandardizeOptions()
    model_uri, version = tracker.log_model(
        run_id, spec=spec, weights=weights, scaling=SCALING, standardize=options, registered_model=registered
    )
    tracker.promote(registered, "champion", str(version))
    tracker.end_run(run_id)
    model_dir = _local_path(tracker.client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location)
    assert (model_dir / "artifacts" / "model.json").is_file() and (model_dir / "python_model.pkl").is_file()
    return run_id, model_uri, model_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri, "victims")
    spec = model_spec(
        encoder="gine",
        hidden_channels=16,
        num_layers=2,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["logs", "toxic"],
        task_types=["regression", "classification"],
    )
    weights = initial_weights(spec, seed=7)
    honest = predict_smiles(materialize(spec, weights, SCALING), SMILES, standardize=StandardizeOptions())
    run_id, model_uri, model_dir = _log_model(tracker, spec, weights, NAME)

    marker = root / "PICKLE_RAN"
    (model_dir / "python_model.pkl").write_bytes(pickle.dumps(_PickleTrap(marker)))

    # a second, un-trapped model whose data files the validation tests overwrite
    _, spare_uri, spare_dir = _log_model(tracker, spec, weights, "molfed-spare")
    originals = {name: (spare_dir / "artifacts" / name).read_bytes() for name in ("model.json", "weights.pt")}
    return SimpleNamespace(
        root=root,
        uri=uri,
        spec=spec,
        honest=honest,
        marker=marker,
        model_dir=model_dir,
        uris={
            "version": f"models:/{NAME}/1",
            "alias": f"models:/{NAME}@champion",
            "logged-model": model_uri,
            "run": f"runs:/{run_id}/model",
        },
        spare_uri=spare_uri,
        spare_dir=spare_dir,
        originals=originals,
    )


@pytest.fixture
def spare(store):
    """The spare model with its original data files back in place."""
    for name, data in store.originals.items():
        (store.spare_dir / "artifacts" / name).write_bytes(data)
    return store


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    pd.DataFrame({"id": range(len(SMILES)), "smi": SMILES}).to_csv(path, index=False)
    return path


def _args(store, model_uri: str, tmp_path: Path) -> list[str]:
    inp = _csv(tmp_path)
    return [
        "predict",
        "--model",
        model_uri,
        "--input",
        str(inp),
        "--smiles-column",
        "smi",
        "--output",
        str(tmp_path / "out.csv"),
        "--tracking-uri",
        store.uri,
    ]


def _assert_honest_predictions(store, out: Path) -> None:
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["id", "smi", "logs", "toxic", "valid"]
    assert frame["valid"].tolist() == store.honest["valid"].tolist() == [True, True, True, False, True]
    for task in ("logs", "toxic"):
        np.testing.assert_allclose(frame[task].to_numpy(), store.honest[task].to_numpy(), rtol=1e-6, equal_nan=True)
    assert frame["logs"].nunique() == 4  # real, distinct predictions, not a constant


def _assert_no_marker(store) -> None:
    assert not store.marker.exists(), "the model store's pickle ran"


@pytest.mark.parametrize("kind", ["version", "alias", "logged-model", "run", "local-dir"])
def test_predict_runs_no_code_from_the_store_and_reads_only_weights_and_json(store, kind, tmp_path, capsys):
    model_dir = str(store.model_dir.resolve())
    model = str(store.model_dir) if kind == "local-dir" else store.uris[kind]  # the model's directory, as downloaded
    with recording_opens() as opened:
        rc = main(_args(store, model, tmp_path))
    assert rc == 0, capsys.readouterr().err
    _assert_no_marker(store)
    _assert_honest_predictions(store, tmp_path / "out.csv")
    from_store = sorted(os.path.relpath(p, model_dir) for p in opened if p.startswith(model_dir + os.sep))
    assert from_store == ["artifacts/model.json", "artifacts/weights.pt"]  # the hook works, and saw nothing else
    assert not [p for p in opened if "python_model.pkl" in p or f"{os.sep}code{os.sep}molfed" in p]


def test_molfed_command_in_a_fresh_process_runs_no_code_from_the_store(store, tmp_path):
    molfed = Path(sys.executable).with_name("molfed")
    proc = subprocess.run(
        [str(molfed), *_args(store, store.uris["alias"], tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_no_marker(store)
    _assert_honest_predictions(store, tmp_path / "out.csv")


def test_predict_on_a_local_model_directory_imports_no_mlflow(store, tmp_path):
    """The fast path: a model directory on disk needs no registry, so not MLflow's ~2 s of imports either."""
    code = (
        "import sys\nfrom molfed.cli import main\nrc = main(sys.argv[1:])\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'mlflow'))\nsys.exit(rc)"
    )
    args = _args(store, str(store.model_dir), tmp_path)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "[]"
    _assert_no_marker(store)
    _assert_honest_predictions(store, tmp_path / "out.csv")


def test_a_directory_that_is_not_a_model_is_one_line_and_exit_2(store, tmp_path, capsys):
    rc = main(_args(store, str(tmp_path), tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(
        f"molfed: error: cannot load model {str(tmp_path)!r}: FileNotFoundError: no artifacts/weights.pt"
    )


def _spec_with(store, **changes) -> dict:
    return {"spec": {**store.spec.to_dict(), **changes}, "scaling": SCALING, "standardize": {}}


BAD_MODEL_JSON = {
    "not json": lambda s: "{'spec':",
    "a list": lambda s: "[1, 2]",
    "no scaling": lambda s: json.dumps({"spec": s.spec.to_dict(), "standardize": {}}),
    "spec not an object": lambda s: json.dumps({"spec": "gine", "scaling": SCALING, "standardize": {}}),
    "string width": lambda s: json.dumps(_spec_with(s, hidden_channels="16")),
    "unknown key": lambda s: json.dumps({**_spec_with(s), "python_model": "code.py"}),
    "huge width": lambda s: json.dumps(_spec_with(s, hidden_channels=10**9)),
    "unknown encoder": lambda s: json.dumps(_spec_with(s, encoder="os.system")),
    "other featurizer": lambda s: json.dumps(_spec_with(s, in_channels=7)),
    "scaling too short": lambda s: json.dumps({**_spec_with(s), "scaling": {"mean": [0.0], "std": [1.0]}}),
    "NaN scaling": lambda s: json.dumps({**_spec_with(s), "scaling": {"mean": [float("nan"), 0.0], "std": [1, 1]}}),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_JSON))
def test_a_model_json_of_the_wrong_shape_is_one_line_and_exit_2(spare, case, tmp_path, capsys):
    (spare.spare_dir / "artifacts" / "model.json").write_text(BAD_MODEL_JSON[case](spare))
    rc = main(_args(spare, spare.spare_uri, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"molfed: error: cannot load model {spare.spare_uri!r}: ValueError: model.json: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.csv").exists()


def test_a_weights_file_that_is_a_code_pickle_is_refused_unrun(spare, tmp_path, capsys):
    marker = tmp_path / "WEIGHTS_RAN"
    torch.save({"trunk": _PickleTrap(marker)}, spare.spare_dir / "artifacts" / "weights.pt")
    rc = main(_args(spare, spare.spare_uri, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("molfed: error: cannot load model") and err.count("\n") == 1
    assert "UnpicklingError: Weights only load failed" in err  # torch.load(weights_only=True) refused it
    assert not marker.exists()


def test_the_spare_model_predicts_once_restored(spare, tmp_path):
    """Control for the two tests above: their failures come from the planted files, not from the spare model."""
    assert main(_args(spare, spare.spare_uri, tmp_path)) == 0
    _assert_honest_predictions(spare, tmp_path / "out.csv")
