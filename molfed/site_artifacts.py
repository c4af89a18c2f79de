"""Sites mode's artifacts (job replies, update and global weights) over MLflow's REST API, one request each.

``MlflowClient`` spends several requests on one artifact (the run, to resolve its artifact URI; a listing, to tell
a file from a folder; then the transfer) and a round moves a few per partner, on the critical path of both sides.
With a tracking server that serves artifacts (``mlflow server --serve-artifacts``; run artifact URIs
``mlflow-artifacts:/...``) a file is one ``GET`` or ``PUT`` of the artifact proxy, after one lookup of the run's
artifact URI per run and process. The proxy is the same endpoint ``MlflowClient`` ends up calling, so the server's
basic-auth app judges each request exactly as before (per experiment, from the path: a site may write only its own
experiment's runs and read the federation's). Anything else (another artifact store, a local tracking URI) goes
through :class:`molfed.tracking.Tracker`. Credentials are MLflow's own environment variables
(``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` or ``_TOKEN``). No ``mlflow`` import: this module stays light.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from molfed.federated.types import Weights

_TIMEOUT_S = 120
_RETRIES = 7


class Artifacts:
    """Read and write files of runs on tracking server ``tracking_uri`` (thread-safe)."""

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri.rstrip("/")
        self._roots: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._tracker: Any = None

    def get(self, run_id: str, artifact_file: str) -> bytes:
        """The bytes of ``artifact_file`` in run ``run_id``'s artifacts."""
        root = self._root(run_id)
        if root is None:
            return self._fallback_get(run_id, artifact_file)
        return _request(f"{root}/{urllib.parse.quote(artifact_file)}")

    def put(self, run_id: str, artifact_file: str, body: bytes) -> None:
        """Write ``body`` as ``artifact_file`` in run ``run_id``'s artifacts (a retried PUT is idempotent)."""
        root = self._root(run_id)
        if root is None:
            self._fallback_put(run_id, artifact_file, body)
            return
        _request(f"{root}/{urllib.parse.quote(artifact_file)}", data=body, method="PUT")

    def get_json(self, run_id: str, artifact_file: str) -> Any:
        return json.loads(self.get(run_id, artifact_file))

    def put_json(self, run_id: str, artifact_file: str, obj: Any) -> None:
        self.put(run_id, artifact_file, json.dumps(obj).encode())

    def get_weights(self, run_id: str, artifact_file: str) -> dict[str, np.ndarray]:
        """Weights written by :meth:`put_weights` or :meth:`molfed.tracking.Tracker.log_weights` (loaded with
        ``torch.load(weights_only=True)``: tensors only, never code)."""
        import torch

        state = torch.load(io.BytesIO(self.get(run_id, artifact_file)), map_location="cpu", weights_only=True)
        return {name: tensor.numpy() for name, tensor in state.items()}

    def put_weights(self, run_id: str, artifact_file: str, weights: Weights) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save({name: torch.from_numpy(np.asarray(a)) for name, a in weights.items()}, buffer)
        self.put(run_id, artifact_file, buffer.getvalue())

    def _root(self, run_id: str) -> str | None:
        """The artifact proxy URL of run ``run_id``'s artifacts, or None when the store is not a tracking server
        serving them (looked up once per run: a run's artifact URI never changes)."""
        with self._lock:
            if run_id in self._roots:
                return self._roots[run_id]
        root = None
        if self.tracking_uri.startswith(("http://", "https://")):
            query = urllib.parse.urlencode({"run_id": run_id})
            info = json.loads(_request(f"{self.tracking_uri}/api/2.0/mlflow/runs/get?{query}"))
            artifact_uri = info["run"]["info"]["artifact_uri"]
            if artifact_uri.startswith("mlflow-artifacts:"):
                path = urllib.parse.quote(urllib.parse.urlparse(artifact_uri).path.strip("/"))
                root = f"{self.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{path}"
        with self._lock:
            if len(self._roots) > 1000:
                self._roots.clear()
            self._roots[run_id] = root
        return root

    def _client(self) -> Any:
        """MLflow's client, for stores other than a tracking server serving artifacts."""
        if self._tracker is None:
            from molfed.tracking import Tracker

            self._tracker = Tracker(self.tracking_uri, None)
        return self._tracker.client

    def _fallback_get(self, run_id: str, artifact_file: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self._client().download_artifacts(run_id, artifact_file, tmp)).read_bytes()

    def _fallback_put(self, run_id: str, artifact_file: str, body: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(body)
            self._client().log_artifact(run_id, str(path), str(Path(artifact_file).parent) or None)


def upload_json(tracking_uri: str, run_id: str, artifact_file: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``artifact_file`` in run ``run_id``'s artifacts (as ``Tracker.log_json``)."""
    Artifacts(tracking_uri).put_json(run_id, artifact_file, obj)


def _request(url: str, *, data: bytes | None = None, method: str = "GET") -> bytes:
    """One HTTP call, retried with backoff (about a minute in all) while the server is unreachable or answers 5xx:
    a tracking server restarting must not fail a site's job. A PUT of the same file is idempotent."""
    delay = 0.5
    for attempt in range(_RETRIES + 1):
        try:
            return _request_once(url, data=data, method=method)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == _RETRIES:
                raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == _RETRIES:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 16.0)
    raise AssertionError("unreachable")


def _request_once(url: str, *, data: bytes | None, method: str) -> bytes:
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310 - the configured server
        return response.read()
