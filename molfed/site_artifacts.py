"""A JSON reply to a run's artifacts over MLflow's REST API, without importing ``mlflow`` (sites mode's light jobs).

A site's secure-aggregation steps run as short jobs whose start-up time is the round's cost; the MLflow client
library alone would add about half of Prefect's import time to each. With a tracking server that serves
artifacts (``mlflow server --serve-artifacts``; run artifact URIs ``mlflow-artifacts:/...``) a JSON file is one
``PUT``. Anything else (another artifact store, a local tracking URI) goes through :class:`molfed.tracking.Tracker`.
Credentials are MLflow's own environment variables (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` or ``_TOKEN``).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

_TIMEOUT_S = 120
_RETRIES = 7


def upload_json(tracking_uri: str, run_id: str, artifact_file: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``artifact_file`` in run ``run_id``'s artifacts (as ``Tracker.log_json``)."""
    body = json.dumps(obj).encode()
    base = tracking_uri.rstrip("/")
    if base.startswith(("http://", "https://")):
        query = urllib.parse.urlencode({"run_id": run_id})
        info = json.loads(_request(f"{base}/api/2.0/mlflow/runs/get?{query}"))
        artifact_uri = info["run"]["info"]["artifact_uri"]
        if artifact_uri.startswith("mlflow-artifacts:"):
            path = urllib.parse.urlparse(artifact_uri).path.strip("/")
            target = urllib.parse.quote(f"{path}/{artifact_file}")
            _request(f"{base}/api/2.0/mlflow-artifacts/artifacts/{target}", data=body, method="PUT")
            return
    from molfed.tracking import Tracker

    Tracker(tracking_uri, None).log_json(run_id, obj, artifact_file)


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
        request.add_header("Content-Type", "application/json")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310 - the configured server
        return response.read()
