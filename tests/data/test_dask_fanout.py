"""A partner's featurization fanned out over a local Dask cluster of 2 worker processes (Prefect's DaskTaskRunner),
through the real partner task: same data as the in-process path, both workers used, cluster gone afterwards,
no structure in Prefect's store. One fan-out per module; plus the config's errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest
import torch
import yaml

from molfed.audit import scan, structure_needles
from molfed.config import DaskConfig, RunConfig, SiteConfig, load_config
from molfed.data.demo import BAD_ROWS, write_demo_partners
from molfed.errors import ConfigError
from molfed.federated import partner as p

CHUNK = 70
# One Prefect flow + a 2-process Dask cluster for the module's fixture: measured ~110 s CPU (user+sys, with pytest's
# imports and a fresh Prefect server) and 220-310 s wall at load average 8-17 on 2 cores; hence slow.


@pytest.fixture(scope="module")
def fanned(tmp_path_factory):
    from prefect import flow

    from molfed.preparation import calibration_fraction, standardize_options
    from tasks import dask_featurize
    from tasks.partner import prepare

    root = tmp_path_factory.mktemp("dask-fanout")
    lines = write_demo_partners(root / "demo", n_bad_rows=0)["alpha"].read_text().splitlines()
    first = lines[1].split(",")[0]
    rows = lines + [f'"{s}",{y}' for s, y, _ in BAD_ROWS] + [f"{first},9.5"]  # a duplicate in the last chunk
    library = root / "library.csv"
    library.write_text("\n".join(rows) + "\n")
    partner = {"name": "alpha", "path": str(library), "workspace": str(root / "ws")}
    raw = {"tasks": [{"name": "expt"}], "partners": [partner | {"dask": {"n_workers": 2, "chunk_size": CHUNK}}]}
    config = RunConfig.model_validate(raw)

    @flow(name="dask-fanout-test")
    def prepare_alpha(config: RunConfig) -> object:
        return prepare(config, "alpha")

    prepared = prepare_alpha(config)
    data = p._PREPARED[next(k for k in p._PREPARED if k[2] == str(root / "ws"))]
    reference = p.prepare_partner(
        "alpha",
        path=library,
        workspace=root / "ref-ws",
        smiles_column="smiles",
        label_columns=["expt"],
        task_types=["regression"],
        standardize=standardize_options(config),
        duplicates=config.data.duplicates,
        split_fractions=config.data.split_fractions,
        seed=config.seed,
        calibration_fraction=calibration_fraction(config),  # as the flow prepares it
    )
    manifest = json.loads((root / "ws" / dask_featurize.MANIFEST).read_text())
    return SimpleNamespace(root=root, library=library, prepared=prepared, data=data, ref=reference, manifest=manifest)


@pytest.mark.integration
@pytest.mark.slow
def test_fan_out_gives_the_in_process_partner_data(fanned):
    chunks = fanned.manifest["chunks"]
    assert len(chunks) == -(-(len(fanned.library.read_text().splitlines()) - 1) // CHUNK) == 5
    assert fanned.data.summary == p.PartnerSummary(**{**_fields(fanned.ref.summary), "cache_hit": True})
    assert fanned.ref.summary.n_duplicates_merged == 1 and not fanned.ref.summary.cache_hit
    for split in p.SPLITS:
        ours, ref = fanned.data.splits[split], fanned.ref.splits[split]
        assert len(ours) == len(ref) > 0
        for a, b in zip(ours, ref, strict=True):
            assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x", "edge_index", "edge_attr", "y"))
    ws, ref_ws = fanned.root / "ws", fanned.root / "ref-ws"
    assert (ws / "rejects.csv").read_bytes() == (ref_ws / "rejects.csv").read_bytes()
    assert not (ws / "dask-parts").exists() or not any((ws / "dask-parts").rglob("*.pt"))


@pytest.mark.integration
@pytest.mark.slow
def test_both_workers_ran_chunks_and_are_gone(fanned):
    workers = {c["worker"] for c in fanned.manifest["chunks"]}
    assert len(workers) == 2 and all(w.startswith("tcp://") for w in workers)
    pids = {int(re.search(r":(\d+)\)$", w).group(1)) for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    leftovers = [c for c in psutil.Process().children(recursive=True) if "distributed" in " ".join(c.cmdline())]
    assert leftovers == []


@pytest.mark.integration
@pytest.mark.slow
def test_no_structure_reaches_prefect(fanned):
    needles, keys = structure_needles(pd.read_csv(fanned.library, dtype=str)["smiles"].dropna())
    hits, n_files = scan([Path(os.environ["PREFECT_HOME"])], needles, keys)
    assert n_files > 0 and hits == []
    manifest = json.dumps(fanned.manifest)
    assert not any(n in manifest for n in needles)


def _fields(summary: p.PartnerSummary) -> dict:
    return {k: getattr(summary, k) for k in summary.__slots__}


@pytest.mark.parametrize(
    ("dask", "message"),
    [
        ({"address": "localhost"}, r"partners\.0\.dask\.address: got 'localhost', expected a scheduler address"),
        ({"address": "tcp://10.0.0.5:8786", "n_workers": 4}, r"partners\.0\.dask: n_workers sizes a local cluster"),
        ({"n_workers": 0}, r"partners\.0\.dask\.n_workers: Input should be greater than or equal to 1"),
        ({"n_workers": 257}, r"partners\.0\.dask\.n_workers: Input should be less than or equal to 256"),
        ({"chunk_size": 5}, r"partners\.0\.dask\.chunk_size: Input should be greater than or equal to 10"),
        ({"workers": 2}, r"partners\.0\.dask\.workers: Extra inputs are not permitted"),
    ],
)
def test_dask_config_errors_name_the_key(tmp_path: Path, dask: dict, message: str):
    path = tmp_path / "c.yaml"
    lib = tmp_path / "lib.csv"
    lib.write_text("smiles,expt\nCCO,1\n")
    path.write_text(
        yaml.safe_dump({"tasks": [{"name": "expt"}], "partners": [{"name": "a", "path": str(lib), "dask": dask}]})
    )
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_dask_config_accepts_an_address_and_belongs_to_the_site_in_sites_mode(tmp_path: Path):
    ok = RunConfig.model_validate(
        {"tasks": [{"name": "y"}], "partners": [{"name": "a", "path": "x.csv", "dask": {"address": "tcp://h:8786"}}]}
    )
    assert ok.partners[0].dask.address == "tcp://h:8786" and ok.partners[0].dask.chunk_size == 50_000
    with pytest.raises(ValueError, match="dask settings belong in the partner's own site config"):
        RunConfig.model_validate(
            {
                "tasks": [{"name": "y"}],
                "mode": "sites",
                "baselines": {"pooled": False},
                "partners": [{"name": "a", "dask": {}}],
            }
        )
    site = SiteConfig(name="a", path=Path("x.csv"), workspace=Path("ws"), dask={"n_workers": 3})
    assert site.as_partner().dask == DaskConfig(n_workers=3)
