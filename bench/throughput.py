"""Training throughput in graphs/s per encoder, on CPU (1 torch thread and all cores) and on CUDA when present.

Same graphs (FreeSolv + analogs, featurized by molfed), the demo's model size (hidden 64, 3 layers, mean readout),
batch size 32, Adam; the first epoch is a warm-up and not timed. ``device: auto`` in a config resolves through
:func:`molfed.federated.partner.resolve_device`, the function used here.

    python bench/throughput.py [--molecules 2000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from molecules import molecules  # noqa: E402

from molfed.chem.encode import concat_codes, encode_mol  # noqa: E402
from molfed.chem.featurize import graphs_from_codes  # noqa: E402
from molfed.chem.standardize import parse_smiles  # noqa: E402
from molfed.federated import coordinator as coord  # noqa: E402
from molfed.federated.partner import resolve_device  # noqa: E402
from molfed.models.model import build_model  # noqa: E402
from molfed.models.registry import ENCODERS  # noqa: E402
from molfed.train.local import train_local  # noqa: E402


def graphs(n: int):  # noqa: ANN201
    mols = [parse_smiles(s)[0] for s in molecules(n)]
    y = np.random.default_rng(0).normal(size=(len(mols), 1)).astype(np.float32)
    return graphs_from_codes(concat_codes(encode_mol(m) for m in mols), y)


def rate(encoder: str, data, device: torch.device, epochs: int) -> float:  # noqa: ANN001
    spec = coord.model_spec(
        encoder=encoder,
        hidden_channels=64,
        num_layers=3,
        dropout=0.0,
        readout="mean",
        head_layers=2,
        task_names=["y"],
        task_types=["regression"],
    )
    model = build_model(spec, seed=0)
    model.set_target_scaling([0.0], [1.0])
    model.to(device)
    train_local(model, data, epochs=1, batch_size=32, seed=0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_local(model, data, epochs=epochs, batch_size=32, seed=1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(data) * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data = graphs(args.molecules)
    cores = os.cpu_count() or 1
    auto = resolve_device("auto")
    print(f"training throughput: {len(data)} graphs, batch 32, {args.epochs} timed epochs; device auto -> {auto}")
    print(f"{'target':<46} {'figure':>16}  {'reference':<22} ratio")
    for encoder in sorted(ENCODERS):
        torch.set_num_threads(1)
        one = rate(encoder, data, torch.device("cpu"), args.epochs)
        torch.set_num_threads(cores)
        many = rate(encoder, data, torch.device("cpu"), args.epochs)
        print(f"{'6. train ' + encoder + ', CPU 1 thread':<46} {one:>10.0f} graphs/s")
        print(
            f"{'6. train ' + encoder + f', CPU {cores} threads':<46} {many:>10.0f} graphs/s  "
            f"{'1 thread':<22} {many / one:.2f}x"
        )
        if auto.type == "cuda":
            gpu = rate(encoder, data, auto, args.epochs)
            name = torch.cuda.get_device_name(auto)
            print(
                f"{'6. train ' + encoder + ', CUDA':<46} {gpu:>10.0f} graphs/s  "
                f"{'CPU ' + str(cores) + ' threads':<22} {gpu / many:.2f}x ({name})"
            )


if __name__ == "__main__":
    main()
