"""Featurization, library pipeline and cache, side by side in one run on the same molecules.

Per core (1 process, 1 torch thread), on FreeSolv's SMILES (repeated), cut into chunks; every method runs on every
chunk in turn (round-robin, so load changes hit all alike) and a method's time is the sum over chunks of its best
time per chunk -- the least-disturbed estimate on a shared machine -- in this process's CPU time and in wall time:

* bare ``Chem.MolFromSmiles`` -- the floor of any RDKit featurizer;
* molfed featurization = ``encode_smiles`` (parse with full sanitization + graph codes) + ``graphs_from_codes``
  (PyG graphs with tensors), and its parts -- graph codes both the fast way (``encode_mols``: RDKit pickles decoded
  in batches) and through RDKit's per-atom getters (``encode_mol``, the reference);
* the floor of this featurizer: parsing plus the one RDKit call it makes per molecule (``Mol.ToBinary``);
* PyG's ``from_smiles``;
* standardization alone (``standardize_mol``, a separate step of the library pipeline).

Then, on libraries of distinct analogs (``--library`` sizes): the whole library pipeline (read, parse, labels,
standardize, InChIKey, duplicates, graph codes, scaffolds, tensors, cache write) cold with 1 and with 2 worker
processes, each in a new process, with the CPU time of all processes (workers included), and the cache hit. As the
reference for the 2-process figure, two independent 1-process runs at once show what the 2 cores give this work
with nothing shared (a hypervisor's vCPUs, shared caches and memory bandwidth can keep that below 2x). All cases
run ``--library-runs`` times, in turn; ratios are taken within a run and their median is printed with their range:
this VM's speed drifts by 10-30% over minutes, which ratios of runs minutes apart would measure instead.

    python bench/featurize.py [--repeat 3] [--library 1000 2000 4000 8000] [--library-runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datamol as dm
import torch
from rdkit import Chem, rdBase

sys.path.insert(0, str(Path(__file__).parent))
from molecules import write_library  # noqa: E402

from molfed.chem.encode import concat_codes, encode_mol, encode_mols, encode_smiles  # noqa: E402
from molfed.chem.featurize import graphs_from_codes  # noqa: E402
from molfed.chem.standardize import StandardizeOptions, parse_many, standardize_mol  # noqa: E402


def best_times(fns: dict[str, Callable[[int], object]], n_chunks: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(CPU, wall) seconds of each ``fn(chunk_index)``: per chunk the best of ``rounds`` round-robin runs, summed."""
    cpu = {name: [float("inf")] * n_chunks for name in fns}
    wall = {name: [float("inf")] * n_chunks for name in fns}
    for _ in range(rounds):
        for chunk in range(n_chunks):
            for name, fn in fns.items():
                w, c = time.perf_counter(), time.process_time()
                fn(chunk)
                cpu[name][chunk] = min(cpu[name][chunk], time.process_time() - c)
                wall[name][chunk] = min(wall[name][chunk], time.perf_counter() - w)
    return {name: (sum(cpu[name]), sum(wall[name])) for name in fns}


def row(name: str, value: str, reference: str = "", ratio: str = "") -> None:
    print(f"{name:<46} {value:>18}  {reference:<22} {ratio}")


def per_core(smiles: list[str], chunk: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Molecules per CPU second and per wall second of each method."""
    from torch_geometric.utils import from_smiles

    n = len(smiles)
    chunks = [smiles[i : i + chunk] for i in range(0, n, chunk)]
    mols = [[m for m, _ in parse_many(c)] for c in chunks]
    codes = [concat_codes(encode_mol(m) for m in ms) for ms in mols]
    options = StandardizeOptions()

    def floor(i: int) -> None:
        for text in chunks[i]:
            Chem.MolFromSmiles(text).ToBinary()

    with rdBase.BlockLogs():
        t = best_times(
            {
                "bare": lambda i: [Chem.MolFromSmiles(s) for s in chunks[i]],
                "molfed": lambda i: graphs_from_codes(encode_smiles(chunks[i])[0]),
                "floor": floor,
                "pyg": lambda i: [from_smiles(s) for s in chunks[i]],
                "parse": lambda i: parse_many(chunks[i]),
                "encode": lambda i: encode_mols(mols[i]),
                "encode_getters": lambda i: concat_codes(encode_mol(m) for m in mols[i]),
                "tensors": lambda i: graphs_from_codes(codes[i]),
                "standardize": lambda i: [standardize_mol(m, options) for m in mols[i][::3]],
            },
            len(chunks),
            rounds,
        )
    n_std = sum(len(ms[::3]) for ms in mols)
    return {
        k: ((n_std if k == "standardize" else n) / c, (n_std if k == "standardize" else n) / w)
        for k, (c, w) in t.items()
    }


# One cold or warm featurization in a new process, as in production (whose __main__ is the light ``molfed`` CLI,
# which is what worker processes import); timed there around the featurization step, after the imports. CPU time
# counts this process and, with workers, the forkserver and the pool processes it forked and reaped (from /proc).
CHILD = """
import os, sys, time
from pathlib import Path
from molfed.chem.standardize import StandardizeOptions
from molfed.data.cache import featurize_library

def forkserver_cpu():
    from multiprocessing import forkserver
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None:
        return 0.0
    time.sleep(0.3)  # let the forkserver reap its pool processes
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime

options = dict(smiles_column="smiles", label_columns=["y"], task_types=["regression"],
               standardize=StandardizeOptions(), duplicates="merge", workers=int(sys.argv[3]))
wall, cpu = time.perf_counter(), time.process_time()
result = featurize_library(Path(sys.argv[1]), Path(sys.argv[2]), **options)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(result.cache_hit, len(result.graphs), wall, cpu + forkserver_cpu())
"""


def _child(path: Path, workspace: Path, workers: int) -> tuple[bool, int, float, float]:
    args = [sys.executable, "-c", CHILD, str(path), str(workspace), str(workers)]
    hit, n_graphs, wall, cpu = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return hit == "True", int(n_graphs), float(wall), float(cpu)


def _pair(path: Path, workspaces: tuple[Path, Path]) -> float:
    """The machine's own ceiling: two independent 1-process runs at once (no pool, nothing shared but the
    hardware); the slower one's featurization seconds."""
    both = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(ws), "1"], stdout=subprocess.PIPE, text=True)
        for ws in workspaces
    ]
    walls = [float(p.communicate()[0].split()[2]) for p in both]
    assert all(p.returncode == 0 for p in both)
    return max(walls)


def library(n: int, runs: int) -> dict[str, list[float]]:
    """Per run, seconds (wall, and CPU of all processes) of a cold run with 1 and with 2 workers, of two independent
    1-process runs at once and of a cache hit. The cases of a run follow each other within a minute, so each run
    gives ratios measured at one speed of the machine (this VM's speed drifts by 10-30% over minutes)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        path = write_library(tmp / "lib.csv", n)
        out: dict[str, list[float]] = {}
        for run in range(runs):
            for case, workers in (("cold1", 1), ("cold2", 2)):
                hit, n_graphs, wall, cpu = _child(path, tmp / f"{case}-{run}", workers)
                assert not hit
                out.setdefault(case, []).append(wall)
                out.setdefault(f"{case}_cpu", []).append(cpu)
            out.setdefault("pair", []).append(_pair(path, (tmp / f"pair-{run}-a", tmp / f"pair-{run}-b")))
            hit, _, wall, cpu = _child(path, tmp / f"cold1-{run}", 1)
            assert hit
            out.setdefault("warm", []).append(wall)
            out.setdefault("warm_cpu", []).append(cpu)
        out["n"] = [n_graphs]
    return out


def print_per_core(r: dict[str, tuple[float, float]]) -> None:
    row("target / step", "mol/CPU-s (wall)", "reference", "ratio in CPU time (in wall time)")

    def rate(k: str) -> str:
        return f"{r[k][0]:.0f} ({r[k][1]:.0f})"

    def ratio(k: str, ref: str) -> str:
        return f"{r[k][0] / r[ref][0]:.2f}x ({r[k][1] / r[ref][1]:.2f}x)"

    row("bare Chem.MolFromSmiles", rate("bare"))
    row("1. featurization (parse + graph tensors)", rate("molfed"), "bare MolFromSmiles", ratio("molfed", "bare"))
    print(f"{'':<88}(target >= 0.40x)")
    row("", "", "PyG from_smiles", ratio("molfed", "pyg") + " (target >= 3x)")
    row("   floor: parse + Mol.ToBinary (its RDKit calls)", rate("floor"), "bare MolFromSmiles", ratio("floor", "bare"))
    row("   PyG from_smiles", rate("pyg"), "bare MolFromSmiles", ratio("pyg", "bare"))
    for part in ("parse", "encode", "tensors"):
        row(f"   part: {part}", rate(part), "bare MolFromSmiles", ratio(part, "bare"))
    row(
        "   encode via per-atom getters (encode_mol)",
        rate("encode_getters"),
        "encode (pickles)",
        ratio("encode_getters", "encode"),
    )
    row("   standardize_mol (separate step)", rate("standardize"), "bare MolFromSmiles", ratio("standardize", "bare"))


def print_library(sizes: list[int], runs: int) -> None:
    print("\nlibrary pipeline, cold, distinct molecules (FreeSolv + analogs), read to graphs, each run a new process;")
    print(f"{runs} runs of all cases; times: median over runs; ratios: median [min-max] of the per-run ratios;")
    print("CPU = all processes (2 workers: this one, the forkserver and its pool process)")
    row("molecules: case", "mol/s (wall)", "reference", "ratio")
    for size in sizes:
        lib = library(size, runs)
        n = int(lib["n"][0])
        med = {k: statistics.median(v) for k, v in lib.items()}

        def ratio(num: str, den: str, scale: float = 1.0, lib: dict[str, list[float]] = lib) -> str:
            r = sorted(scale * a / b for a, b in zip(lib[num], lib[den], strict=True))
            return f"{statistics.median(r):.2f}x [{r[0]:.2f}-{r[-1]:.2f}]"

        row(f"{n}: 1 process", f"{n / med['cold1']:.0f}", f"{med['cold1']:.2f} s, {med['cold1_cpu']:.2f} CPU-s")
        row(
            f"{n}: 2 processes",
            f"{n / med['cold2']:.0f}",
            f"{med['cold2']:.2f} s, {med['cold2_cpu']:.2f} CPU-s",
            f"{ratio('cold1', 'cold2')} wall (target >= 1.7x); CPU-projected on 2 idle cores "
            f"{ratio('cold1_cpu', 'cold2_cpu', 2.0)}",
        )
        row(
            f"{n}: 2 independent 1-process runs at once",
            f"{2 * n / med['pair']:.0f}",
            f"{med['pair']:.2f} s the slower",
            f"{ratio('cold1', 'pair', 2.0)} (what the 2 cores give this work with nothing shared)",
        )
        row(
            f"{n}: cache hit",
            f"{med['warm'] * 1000:.0f} ms",
            f"{med['warm_cpu'] * 1000:.0f} ms CPU",
            f"{ratio('cold1', 'warm')} faster than cold, 1 process (target >= 50x)",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="copies of FreeSolv's 642 SMILES (per-core part)")
    parser.add_argument("--chunk", type=int, default=321, help="SMILES per chunk (per-core part)")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin rounds (per-core part)")
    parser.add_argument(
        "--library", type=int, nargs="*", default=[1000, 2000, 4000, 8000], help="library sizes (0: skip)"
    )
    parser.add_argument("--library-runs", type=int, default=3, help="runs of all library cases (median of ratios)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    smiles = list(dm.data.freesolv()["smiles"]) * args.repeat
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(
        f"per core: {len(smiles)} SMILES (FreeSolv x {args.repeat}) in chunks of {args.chunk}, 1 process, 1 torch "
        f"thread, per chunk best of {args.rounds} round-robin"
    )
    print_per_core(per_core(smiles, args.chunk, args.rounds))
    sizes = [n for n in args.library if n > 0]
    if sizes:
        print_library(sizes, args.library_runs)
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("(On a shared machine the wall ratios mostly measure other users' load; the CPU-time figures are the")
    print(" processes' own work: 2 * CPU(1 process) / CPU(2 processes) is the speed-up 2 idle cores would give.)")


if __name__ == "__main__":
    main()
