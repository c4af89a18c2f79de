"""A partner's featurization fanned out over Dask: one Prefect task per row-range chunk on a ``DaskTaskRunner``.

Set per partner (``partners[i].dask`` or the site config's ``dask``). Tasks take a :class:`LibrarySpec` and a
:class:`Chunk` (paths, a row range, a digest) and return a :class:`ChunkResult` (counts, digests, a path, the worker);
SMILES, labels and graphs stay in the library file and the workspace. Tasks use the PRIVATE options (no persisted
results or inputs); Dask pickles their arguments to the workers, which is transport, not storage. The partner then
merges the parts into the graph cache in its own process, so :func:`~molfed.data.cache.featurize_library` loads it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

from prefect import flow, task
from prefect.settings import get_current_settings
from prefect_dask import DaskTaskRunner

from molfed.chem.standardize import StandardizeOptions
from molfed.config import DaskConfig, PartnerConfig, RunConfig
from molfed.data import dask_featurize as dk
from molfed.data.library import file_digest
from tasks._options import PRIVATE

log = logging.getLogger(__name__)

MANIFEST = "dask-featurize.json"
"""Per-chunk counts, digests and workers of the last fan-out, in the partner's workspace."""
_DONE: set[tuple[object, ...]] = set()
_LOCK = threading.Lock()


@task(name="featurize-chunk", task_run_name="featurize-chunk-{chunk.index}", **PRIVATE)
def featurize_chunk(spec: dk.LibrarySpec, chunk: dk.Chunk) -> dk.ChunkResult:
    """Featurize one chunk on a Dask worker; the result names that worker's address."""
    from distributed import get_worker

    result = dk.featurize_chunk(spec, chunk)
    try:
        return replace(result, worker=f"{get_worker().address} ({result.worker})")
    except ValueError:  # not on a Dask worker (e.g. the task called directly)
        return result


@flow(name="partner-featurize", persist_result=False, log_prints=False)
def fan_out(spec: dk.LibrarySpec, chunks: list[dk.Chunk]) -> list[dk.ChunkResult]:
    """Submit every chunk to the flow's task runner; results in chunk order."""
    futures = [featurize_chunk.submit(spec, chunk) for chunk in chunks]
    return [f.result() for f in futures]


def task_runner(settings: DaskConfig) -> DaskTaskRunner:
    """A runner on the cluster at ``settings.address``, or on a local cluster of ``n_workers`` processes."""
    if settings.address is not None:
        return DaskTaskRunner(address=settings.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.n_workers,
            "threads_per_worker": 1,  # RDKit work holds the GIL: one process per core
            "processes": True,
            "dashboard_address": None,
            "env": _api_env(),
        },
    )


def _api_env() -> dict[str, str]:
    """Point local workers at this process's Prefect API. With no ``PREFECT_API_URL`` (ephemeral mode) each worker
    would otherwise start its own temporary server (tens of seconds each)."""
    if get_current_settings().api.url or not get_current_settings().server.ephemeral.enabled:
        return {}  # workers inherit PREFECT_API_URL (and auth) from this process's environment
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()  # idempotent: the one this process's client uses
    return {"PREFECT_API_URL": server.api_url}


def featurize_over_dask(
    spec: dk.LibrarySpec, settings: DaskConfig, parts_dir: Path, *, partner: str | None = None
) -> list[dk.ChunkResult]:
    """Plan the chunks and run them on a Dask cluster (a local one is started and closed here)."""
    chunks = dk.plan_chunks(spec, parts_dir, settings.chunk_size, partner=partner)
    runner = task_runner(settings)  # TaskRunner[PrefectDaskFuture]: fine at run time, invariant for mypy
    return fan_out.with_options(task_runner=runner, flow_run_name=f"featurize-{partner}")(spec, chunks)  # type: ignore[arg-type]


def ensure_featurized(config: RunConfig, cfg: PartnerConfig) -> None:
    """With ``cfg.dask`` set, fill the partner's graph cache through a Dask fan-out unless it is already there."""
    if cfg.dask is None or cfg.path is None:
        return
    present = [(cfg.column_for(t.name), t.type) for t in config.tasks if cfg.has_shared(t.name)]
    present += [(t.label_column, t.type) for t in cfg.private_tasks]
    spec = dk.LibrarySpec(
        Path(cfg.path),
        cfg.smiles_column,
        tuple(c for c, _ in present),
        tuple(t for _, t in present),
        StandardizeOptions(**config.data.standardize.model_dump()),
    )
    workspace = config.workspace_for(cfg)
    stat = spec.path.stat() if spec.path.is_file() else None
    key = (spec, str(workspace), config.data.duplicates, stat and (stat.st_mtime_ns, stat.st_size))
    with _LOCK:
        if stat is None or key in _DONE:
            return  # a missing file is featurize_library's error to report
    digest = file_digest(spec.path)
    cache_file = dk.cache_file_for(spec, workspace, digest=digest, duplicates=config.data.duplicates)
    if not cache_file.exists():
        parts_dir = workspace / "dask-parts" / cache_file.stem
        results = featurize_over_dask(spec, cfg.dask, parts_dir, partner=cfg.name)
        dk.library_from_parts(
            spec, results, cache_file, digest=digest, duplicates=config.data.duplicates, partner=cfg.name
        )
        shutil.rmtree(parts_dir, ignore_errors=True)
        dk.write_manifest(workspace / MANIFEST, results)
        n_workers = len({r.worker for r in results})
        log.info("partner %s: featurized %d chunks on %d Dask workers", cfg.name, len(results), n_workers)
    with _LOCK:
        _DONE.add(key)
