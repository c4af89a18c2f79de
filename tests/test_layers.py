"""The layer contract (pyproject's ``[tool.importlinter]``) and the absence of import cycles, checked on every run.

Layers, lowest first: chem -> data -> models -> privacy (DP-SGD, accounting) -> train -> federated (the engine)
-> site -> config -> adapters (tracking, start-up, audits, reports, serving) -> tasks -> flows -> cli; Prefect only
in tasks and flows; MLflow only in ``molfed.tracking``.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("molfed", "tasks", "flows", exclude_type_checking_imports=True)
    edges = nx.DiGraph(
        (module, imported) for module in graph.modules for imported in graph.find_modules_directly_imported_by(module)
    )
    cycles = [sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]
    assert not cycles, cycles
