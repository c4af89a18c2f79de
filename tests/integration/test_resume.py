"""Never lose a run: determinism, kill + resume, partner failures under the quorum.

Tiny federation: the three demo partners cut to 60 rows, hidden 16, 1 epoch, 4 rounds, SCAFFOLD (server control
variate in the checkpoint, partner control variates in the workspaces), baselines off. Runs, all in one store:

- ``reference``: uninterrupted, in this process;
- ``repeat``: the same config again after gamma's graph cache was corrupted (determinism + a corrupt cache);
- ``killed``: ``molfed run`` in a subprocess, SIGKILLed in round 3 (alpha stalls there through the test-only fault
  hook, after beta and gamma already saved their round-3 SCAFFOLD state), then ``molfed resume``;
- ``faulty``: quorum 2, faults injected per round, stops below quorum in round 4, then resumed with a partner
  failing its final evaluation.

Cost (2-core machine shared with other work, 2026-11-29): ~220-420 s for the module, of which the reference run's
~100-215 s include the cold start of the ephemeral Prefect server; the subprocess (imports, rounds 1-3, kill) plus
the resume ~70-130 s; the resume itself ~13-18 s from the kill. Hence ``slow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from molfed.audit_cli import audit_stores
from molfed.config import parse_config
from molfed.data.demo import write_demo_partners
from molfed.federated.faults import ENV as FAULTS
from molfed.tracking import CHECKPOINT_TAG

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 4
ROWS = 60


def _config(root: Path, paths: dict[str, Path], **federation: object) -> dict:
    return {
        "name": "resume-test",
        "seed": 3,
        "tasks": [{"name": "expt"}],
        "partners": [{"name": n, "path": str(p), "workspace": str(root / "ws" / n)} for n, p in paths.items()],
        "model": {"hidden_channels": 16, "num_layers": 2},
        "train": {"epochs": 1, "batch_size": 32},
        "federation": {"rounds": ROUNDS, "strategy": "scaffold", **federation},
        "baselines": {"local_only": False, "pooled": False},
        "tracking": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment": "resume",
            "registered_model": None,
        },
        "champion": {"enabled": False},
    }


def _run_flow(config: dict) -> str:
    from flows.federated_training import federated_training
    from molfed.config import parse_config

    return federated_training(parse_config(config))["run_id"]


def _history(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _final_weights(client: MlflowClient, run_id: str, tmp: Path) -> dict[str, np.ndarray]:
    local = client.download_artifacts(run_id, f"global_model/round_{ROUNDS:04d}.pt", str(tmp))
    return {k: v.numpy() for k, v in torch.load(local, weights_only=True).items()}


def _same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _subprocess_env() -> dict[str, str]:
    """The test's environment; the subprocess reuses this process's ephemeral Prefect server when it runs."""
    from prefect.server.api.server import SubprocessASGIServer

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = SubprocessASGIServer()
    if server.running:
        env["PREFECT_API_URL"] = server.api_url
    return env


def _kill_in_round_3(root: Path, config_path: Path, client: MlflowClient, known: set[str]) -> tuple[str, float]:
    env = {**_subprocess_env(), FAULTS: "alpha@round3=sleep:600"}
    args = [sys.executable, "-m", "molfed.cli", "run", str(config_path)]
    with open(root / "killed.log", "wb") as log:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                exp = client.get_experiment_by_name("resume")
                runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_id not in known] if exp else []
                if runs and runs[0].data.tags.get(CHECKPOINT_TAG) == "2":
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"round 2 never completed: {(root / 'killed.log').read_text()[-2000:]}")
            state = root / "ws" / "beta" / "federation_state" / runs[0].info.run_id / "scaffold_c_i.npz"
            while time.monotonic() < deadline and not (state.exists() and np.load(state)["__round__"] == 3):
                time.sleep(0.2)  # round 3 is under way: beta saved its round-3 state, alpha stalls
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    return runs[0].info.run_id, killed_at


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from molfed.cli import main

    root = tmp_path_factory.mktemp("resume")
    paths = write_demo_partners(root / "data", seed=0)
    for p in paths.values():
        p.write_text("\n".join(p.read_text().splitlines()[: ROWS + 1]) + "\n")
    config = _config(root, paths)
    client = MlflowClient(tracking_uri=config["tracking"]["tracking_uri"])
    timings = {}

    t0 = time.monotonic()
    reference = _run_flow(config)
    timings["reference"] = time.monotonic() - t0

    cache = next((root / "ws" / "gamma" / "cache").glob("graphs-*.pt"))
    cache.write_bytes(b"not a torch file")
    repeat = _run_flow(config)

    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    t0 = time.monotonic()
    killed, killed_at = _kill_in_round_3(root, config_path, client, {reference, repeat})
    tracking = ["--tracking-uri", config["tracking"]["tracking_uri"]]
    resumed_rc = main(["resume", killed, *tracking])
    timings["kill_and_resume"] = time.monotonic() - t0
    timings["resume"] = time.monotonic() - killed_at

    faults = "alpha@round1=raise-once;beta@round2=raise;gamma@round3=sleep:60;beta@round4=raise;gamma@round4=raise"
    faulty_config = _config(root, paths, min_partners=2, partner_retries=1, task_timeout_s=3)
    os.environ[FAULTS] = faults
    try:
        from molfed.federated.types import QuorumError

        with pytest.raises(QuorumError) as stopped:
            _run_flow(faulty_config)
        faulty = client.search_runs([client.get_experiment_by_name("resume").experiment_id])[0].info.run_id
        os.environ[FAULTS] = "beta@finish=raise"
        faulty_rc = main(["resume", faulty, *tracking])
    finally:
        os.environ.pop(FAULTS, None)
    print(f"\nresume test timings (s): {timings}")
    return SimpleNamespace(
        root=root,
        config=config,
        client=client,
        cache=cache,
        reference=reference,
        repeat=repeat,
        killed=killed,
        resumed_rc=resumed_rc,
        faulty=faulty,
        stopped=str(stopped.value),
        faulty_rc=faulty_rc,
        timings=timings,
    )


def test_same_config_and_seed_give_identical_metrics_and_weights_despite_a_corrupt_cache(runs, tmp_path):
    client = runs.client
    assert _history(client, runs.repeat) == _history(client, runs.reference)
    assert _same_weights(
        _final_weights(client, runs.repeat, tmp_path / "a"), _final_weights(client, runs.reference, tmp_path / "b")
    )
    assert torch.load(runs.cache, weights_only=True)["meta"]["digest"]  # the corrupt cache was rebuilt


def test_a_killed_run_resumes_to_the_uninterrupted_result_with_every_metric_once(runs, tmp_path):
    client = runs.client
    assert runs.resumed_rc == 0
    run = client.get_run(runs.killed)
    assert run.info.status == "FINISHED" and run.data.tags[CHECKPOINT_TAG] == str(ROUNDS)
    assert _same_weights(
        _final_weights(client, runs.killed, tmp_path / "a"), _final_weights(client, runs.reference, tmp_path / "b")
    )
    resumed, reference = _history(client, runs.killed), _history(client, runs.reference)
    assert resumed == reference  # same keys, each (step, value) once: nothing duplicated, nothing missing
    assert [s for s, _ in resumed["val_rmse"]] == list(range(1, ROUNDS + 1))


def test_failed_partners_are_retried_then_left_out_under_the_quorum(runs):
    client, run_id = runs.client, runs.faulty
    failed = dict(_history(client, run_id)["partners_failed"])
    assert failed == {1: 0.0, 2: 1.0, 3: 1.0, 4: 0.0}  # round 1 retried fine; 2: exception; 3: timeout
    tags = client.get_run(run_id).data.tags
    assert "injected fault" in tags["round.2.failed.beta"]
    assert "timed out after 3 s" in tags["round.3.failed.gamma"]
    assert "round.1.failed.alpha" not in tags


def test_below_quorum_the_run_stops_resumably_and_a_finish_failure_keeps_the_rest(runs):
    client, run_id = runs.client, runs.faulty
    assert "round.4: 1 partner(s) succeeded, quorum is 2" in runs.stopped
    assert f"molfed resume {run_id}" in runs.stopped and "after round 3" in runs.stopped
    assert runs.faulty_rc == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "injected fault" in run.data.tags["finish.failed.beta"]
    history = _history(client, run_id)
    assert [s for s, _ in history["train_loss"]] == list(range(1, ROUNDS + 1))
    assert [s for s, _ in history["val_rmse"]] == list(range(1, ROUNDS + 1))
    assert "test_rmse.alpha" in history and "test_rmse.gamma" in history and "test_rmse.beta" not in history


def test_leak_audit_finds_no_partner_structure_after_the_flow(runs):
    """``molfed audit``'s index of this module's libraries over its MLflow store and the session's PREFECT_HOME."""
    report = audit_stores(parse_config(runs.config))
    assert report.files > 0 and report.rows > 0
    assert report.hits == [], [(str(h.path), h.location) for h in report.hits[:5]]
