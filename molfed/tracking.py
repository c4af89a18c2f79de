"""Everything MLflow: the only module in molfed that imports ``mlflow``.

Only weights, counts, digests, metrics and configuration reach MLflow. Partners appear by name; their libraries
as metadata-only datasets (name, digest, counts; a ``code`` source that names no path).

The embedded default store is SQLite at ``./mlruns/mlflow.db`` with artifacts under ``./mlruns/artifacts`` (never
MLflow's ``mlruns/<id>/meta.yaml`` file store). ``tracking_uri`` in the config wins, then ``$MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from mlflow.tracking import MlflowClient

from molfed import layout
from molfed.chem.standardize import StandardizeOptions
from molfed.federated.conformal import Calibration
from molfed.federated.types import Weights
from molfed.federated.weights import load_weights, save_weights
from molfed.model_files import MODEL_FILES, load_model_files, parse_model_file
from molfed.models.model import ModelSpec
from molfed.startup import seed_mlflow_store, store_uri

log = logging.getLogger(__name__)

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3 opens an experiment on its GenAI overview unless this tag says it holds model-training runs: then on the
runs table."""

CHECKPOINT_TAG = "molfed.checkpoint.round"
"""Run tag naming the last round whose checkpoint is complete (set after the artifact is stored: the commit)."""

#: The model's input example: two drug-like molecules drawn by hand for molfed, not taken from any library.
#: (Well-known drugs will not do: FreeSolv itself contains aspirin and caffeine, and a leak audit rightly flags a
#: partner's structure wherever it appears.)
EXAMPLE_SMILES = ("O=C(NC1CC1)c1ccc(-c2ncc(F)cn2)cc1", "CN1CCN(c2ccc(C(=O)Nc3cccc(C#N)c3)cn2)CC1")
_PACKAGE_DIR = Path(__file__).resolve().parent


def resolve_tracking_uri(configured: str | None = None, *, root: Path | None = None) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store under ``<root>/mlruns``."""
    return store_uri(configured, root=root)  # an absolute URI: the same store from any folder


def _embedded_artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings/lists into dotted keys with string values (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = str(value)[:6000]
    return out


@dataclass(frozen=True, slots=True)
class ChampionModel:
    """The registry's current production model."""

    version: str
    uri: str
    spec: ModelSpec
    weights: dict[str, np.ndarray]
    scaling: dict[str, list[float]]


class Tracker:
    """A thin, thread-safe wrapper over :class:`MlflowClient` with explicit run ids (tasks run in threads)."""

    def __init__(self, tracking_uri: str, experiment: str | None):
        """Open the store; with ``experiment``, create it if needed (partners pass None: they log into runs
        the coordinator created)."""
        self.tracking_uri = tracking_uri
        seed_mlflow_store(tracking_uri)  # a new embedded store starts from molfed init's template
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = ""
        self._logged: dict[str, set[tuple[str, int]]] = {}
        if experiment is None:
            return
        self.experiment_id = self.experiment(experiment)

    def start_run(
        self,
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        experiment_id: str | None = None,
    ) -> str:
        """A new run in this tracker's experiment (or ``experiment_id``)."""
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id or self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (by this tracker's user, who then manages it) if missing."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return self.client.create_experiment(
                name, artifact_location=_embedded_artifact_root(self.tracking_uri), tags=EXPERIMENT_KIND
            )
        if not all(found.tags.get(k) == v for k, v in EXPERIMENT_KIND.items()):
            try:  # an experiment made before molfed set the kind; a read-only user just leaves it
                for key, value in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            except mlflow.exceptions.MlflowException:
                log.debug("could not tag experiment %s with its kind", found.experiment_id)
        return found.experiment_id

    def grant(self, username: str, *, permission: str, experiment_id: str = "", registered_model: str = "") -> None:
        """Give ``username`` ``permission`` (READ, EDIT, MANAGE, NO_PERMISSIONS) on an experiment or registered
        model of a server running MLflow's basic-auth app (this tracker's user must manage the resource)."""
        from mlflow.server.auth.client import AuthServiceClient

        kind, resource = ("experiment", experiment_id) if experiment_id else ("registered_model", registered_model)
        auth = AuthServiceClient(self.tracking_uri)
        try:
            auth.grant_user_permission(username, kind, resource, permission)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth.revoke_user_permission(username, kind, resource)  # set exactly this level (a resumed run, a rerun)
            auth.grant_user_permission(username, kind, resource, permission)

    def has_registered_model(self, name: str) -> bool:
        try:
            self.client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            return False
        return True

    def run_link(self, run_id: str) -> str:
        """A link to the run in the MLflow UI when the store is a server, else the run id and store."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return f"run {run_id} in {self.tracking_uri}"

    def params(self, run_id: str) -> dict[str, str]:
        """The run's params (e.g. to give a child run its parent's config for MLflow's Compare page)."""
        return dict(self.client.get_run(run_id).data.params)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k[:250], v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step``; in a resumed run, (key, step) pairs already logged are skipped."""
        items = self._metric_items(run_id, {step or 0: metrics})
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def _metric_items(self, run_id: str, by_step: Mapping[int, Mapping[str, float]]) -> list[Metric]:
        """Finite metrics as MLflow entities, without (key, step) pairs this run already holds."""
        import time

        ts = int(time.time() * 1000)
        logged = self._logged.get(run_id, set())
        return [
            Metric(k, float(v), ts, step)
            for step, metrics in by_step.items()
            for k, v in metrics.items()
            if np.isfinite(v) and (k, step) not in logged
        ]

    def run_status(self, run_id: str) -> str | None:
        """The run's MLflow status (``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``); None if there is no such run."""
        try:
            return str(self.client.get_run(run_id).info.status)
        except mlflow.exceptions.MlflowException:
            return None

    def reopen_run(self, run_id: str) -> str:
        """Mark a stopped run as running again and log only metrics it does not hold yet (see :meth:`log_metrics`).

        Sets ``experiment_id`` to the run's experiment and returns its name.

        Raises
        ------
        LookupError
            If the store has no such run.
        """
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            raise LookupError(f"no MLflow run {run_id!r} in {self.tracking_uri}") from None
        self.experiment_id = run.info.experiment_id
        self._logged[run_id] = {
            (key, m.step) for key in run.data.metrics for m in self.client.get_metric_history(run_id, key)
        }
        self.client.update_run(run_id, status="RUNNING")
        return self.client.get_experiment(run.info.experiment_id).name

    def delete_child_runs(self, run_id: str, kinds: Sequence[str]) -> int:
        """Delete child runs of ``run_id`` tagged ``molfed.kind`` in ``kinds`` (left by an interrupted run)."""
        children = self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000
        )
        doomed = [c.info.run_id for c in children if c.data.tags.get("molfed.kind") in kinds]
        for child in doomed:
            self.client.delete_run(child)
        return len(doomed)

    def log_checkpoint(self, run_id: str, data: bytes, server_round: int) -> None:
        """Store a checkpoint (:func:`molfed.layout.checkpoint`), then commit it by setting :data:`CHECKPOINT_TAG`."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / layout.checkpoint(server_round)
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
            self.client.log_artifacts(run_id, tmp)
        self.client.set_tag(run_id, CHECKPOINT_TAG, str(server_round))

    def log_round(
        self,
        run_id: str,
        server_round: int,
        metrics: Mapping[int, Mapping[str, float]],
        weights: Weights,
        checkpoint: bytes,
    ) -> None:
        """A completed round in two store calls: the global weights (:func:`molfed.layout.global_weights`) and the
        checkpoint (:func:`molfed.layout.checkpoint`) as artifacts, then the round's metrics (by step) together with
        the commit tag :data:`CHECKPOINT_TAG` in one batch. Metrics already logged (a resumed run) are skipped."""
        with tempfile.TemporaryDirectory() as tmp:
            weights_path, checkpoint_path = (
                Path(tmp, layout.global_weights(server_round)),
                Path(tmp, layout.checkpoint(server_round)),
            )
            for path in (weights_path, checkpoint_path):
                path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(weights, str(weights_path))
            checkpoint_path.write_bytes(checkpoint)
            self.client.log_artifacts(run_id, tmp)
        items = self._metric_items(run_id, metrics)
        chunks = [items[i : i + 500] for i in range(0, len(items), 500)] or [[]]
        for chunk in chunks[:-1]:
            self.client.log_batch(run_id, metrics=chunk)
        self.client.log_batch(run_id, metrics=chunks[-1], tags=[RunTag(CHECKPOINT_TAG, str(server_round))])

    def load_checkpoint(self, run_id: str) -> bytes | None:
        """The last committed checkpoint of ``run_id``, or None if it has none."""
        committed = self.client.get_run(run_id).data.tags.get(CHECKPOINT_TAG)
        if committed is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, layout.checkpoint(int(committed)), tmp)
            return Path(local).read_bytes()

    def log_partner_dataset(self, run_id: str, partner: str, digest: str, counts: Mapping[str, int]) -> None:
        """Record a partner library as a metadata-only dataset: name, digest, counts; no path, no data."""
        source = CodeDatasetSource(tags={"molfed.partner": partner})
        dataset = MetaDataset(source=source, name=f"{partner}-library", digest=digest[:16])  # type: ignore[abstract]
        entity = dataset._to_mlflow_entity()
        tags = [InputTag("mlflow.data.context", "partner")] + [InputTag(f"n_{k}", str(v)) for k, v in counts.items()]
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])

    def log_weights(self, run_id: str, weights: Weights, artifact_file: str) -> None:
        """Log weights as ``artifact_file`` (a ``.pt`` loadable with ``weights_only=True``)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            save_weights(weights, str(path))
            self.client.log_artifact(run_id, str(path), str(Path(artifact_file).parent) or None)

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, obj, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    def download_json(self, run_id: str, artifact_file: str) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(self.client.download_artifacts(run_id, artifact_file, tmp)).read_text())

    def download_weights(self, run_id: str, artifact_file: str) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, artifact_file, tmp)
            return load_weights(local)

    def log_model(
        self,
        run_id: str,
        *,
        spec: ModelSpec,
        weights: Weights,
        scaling: Mapping[str, Sequence[float]],
        standardize: StandardizeOptions,
        registered_model: str | None,
        calibration: Calibration | None = None,
    ) -> tuple[str, str | None]:
        """Log the model as an MLflow pyfunc that takes a ``smiles`` column, and register it.

        ``calibration`` (conformal intervals and sets, temperatures, the applicability domain) is stored in
        ``model.json`` beside the weights, so the registered version carries the calibration of exactly its weights.

        The pyfunc (``python_model.pkl`` + ``code/``) is for ``mlflow models predict`` and
        ``mlflow.pyfunc.load_model``, which unpickle it: only for a store you trust. :func:`load_model` (``molfed
        predict``) reads only its data, :data:`MODEL_FILES`.

        Returns
        -------
        (model_uri, registered version or None)
        """
        mlflow.set_tracking_uri(self.tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            weights_path = Path(tmp) / "weights.pt"
            save_weights(weights, str(weights_path))
            meta_path = Path(tmp) / "model.json"
            meta = {"spec": spec.to_dict(), "scaling": dict(scaling), "standardize": asdict(standardize)}
            if calibration is not None:
                meta["calibration"] = asdict(calibration)
            meta_path.write_text(json.dumps(meta, indent=2))
            artifacts = {"weights": str(weights_path), "meta": str(meta_path)}
            example = pd.DataFrame({"smiles": list(EXAMPLE_SMILES)})
            wrapper = MoleculePyfunc()
            wrapper.load_from_paths(weights_path, meta_path)
            signature = infer_signature(example, wrapper.predict(None, example))
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=MoleculePyfunc(),
                    artifacts=artifacts,
                    code_paths=[str(_PACKAGE_DIR)],
                    signature=signature,
                    input_example=example,
                    pip_requirements=_pip_requirements(),
                )
        version = None
        if registered_model:
            mv = mlflow.register_model(info.model_uri, registered_model)
            version = str(mv.version)
        return info.model_uri, version

    def champion(self, registered_model: str, alias: str) -> ChampionModel | None:
        """The model version under ``alias`` in the registry, or None if there is none."""
        try:
            mv = self.client.get_model_version_by_alias(registered_model, alias)
        except mlflow.exceptions.MlflowException:
            return None
        uri = f"models:/{registered_model}/{mv.version}"
        return ChampionModel(str(mv.version), uri, *load_model_parts(uri, self.tracking_uri))

    def promote(self, registered_model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(registered_model, alias, version)

    def tag_model_version(self, registered_model: str, version: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(registered_model, version, key, str(value))


def _download_model_files(model_uri: str, tracking_uri: str, dst: str) -> tuple[Path, Path]:
    """Download :data:`MODEL_FILES` of a logged model, and nothing else of it, into ``dst``.

    ``models:/`` URIs (``name/1``, ``name@alias``, ``m-<id>``) are resolved to the model's storage location
    through the registry; ``runs:/<id>/<name>`` through the run (MLflow finds the run's logged model).
    """
    mlflow.set_tracking_uri(tracking_uri)
    root = model_uri.rstrip("/")
    if ModelsArtifactRepository.is_models_uri(root):
        root = ModelsArtifactRepository.get_underlying_uri(root).rstrip("/")
    weights, meta = (
        Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{name}", dst_path=dst)) for name in MODEL_FILES
    )
    return weights, meta


def load_model_parts(model_uri: str, tracking_uri: str) -> tuple[ModelSpec, dict[str, np.ndarray], dict]:
    """Spec, weights and target scaling of a molfed model (downloads :data:`MODEL_FILES` only).

    Raises
    ------
    ValueError
        If ``model.json`` is not a valid molfed model config (see :func:`parse_model_file`).
    """
    with tempfile.TemporaryDirectory() as tmp:
        weights_path, meta_path = _download_model_files(model_uri, tracking_uri, tmp)
        meta = parse_model_file(meta_path.read_bytes())
        weights = load_weights(str(weights_path))
    return meta.spec, weights, meta.scaling.model_dump()


def load_model(model_uri: str, tracking_uri: str | None = None) -> MoleculePyfunc:
    """Load a molfed model for prediction without running anything from the store.

    Only :data:`MODEL_FILES` are downloaded: the JSON config is validated, the weights are loaded with
    ``torch.load(weights_only=True)`` and the model is built by the *installed* molfed. The logged pyfunc's
    ``python_model.pkl`` and ``code/`` are never read (``mlflow.pyfunc.load_model`` would unpickle them: use
    that only for a store you trust).

    Parameters
    ----------
    model_uri
        ``models:/name/1``, ``models:/name@alias``, ``models:/m-<id>`` or ``runs:/<run id>/model``.
    tracking_uri
        Default: ``$MLFLOW_TRACKING_URI``, else ``./mlruns`` (:func:`resolve_tracking_uri`).

    Returns
    -------
    A loaded :class:`MoleculePyfunc`; call ``predict(None, frame_with_smiles_column)``.

    Raises
    ------
    ValueError
        If ``model.json`` is not a valid molfed model config or the weights do not fit it.
    mlflow.exceptions.MlflowException
        If the store has no such model.
    """
    wrapper = MoleculePyfunc()
    with tempfile.TemporaryDirectory() as tmp:
        weights_path, meta_path = _download_model_files(model_uri, resolve_tracking_uri(tracking_uri), tmp)
        wrapper.load_from_paths(weights_path, meta_path)
    return wrapper


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = [
        "torch",
        "torch-geometric",
        "rdkit",
        "numpy",
        "pandas",
        "scikit-learn",
        "mlflow",
        "pydantic",
        "pyyaml",
    ]
    return [f"{n}=={version(n)}" for n in names]


class MoleculePyfunc(PythonModel):
    """Serves a molfed model: DataFrame with a ``smiles`` column -> one column per task plus ``valid``.

    Molecules are parsed, standardized and featurized inside ``predict``; an unparsable SMILES gives NaN
    predictions and ``valid = False`` rather than an error. Loading and predicting are :mod:`molfed.model_files`'
    (which ``molfed predict`` uses without MLflow for a local model); this class adapts them to MLflow's pyfunc.
    """

    def load_context(self, context: Any) -> None:
        self.load_from_paths(Path(context.artifacts["weights"]), Path(context.artifacts["meta"]))

    def load_from_paths(self, weights_path: Path, meta_path: Path) -> None:
        """Build the model with the installed molfed from ``weights.pt`` (``weights_only``) and a validated
        ``model.json`` (:func:`~molfed.model_files.load_model_files`; raises ``ValueError`` on a wrong shape)."""
        self.loaded = load_model_files(weights_path, meta_path)
        self.spec = self.loaded.model.spec
        self.standardize = self.loaded.standardize
        self.calibration = self.loaded.calibration
        self.model = self.loaded.model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.loaded.predict(model_input)


def log_partner_model(
    tracking_uri: str, directory: Path, *, partner: str, federation_run: str, metrics: Mapping[str, Mapping[str, float]]
) -> str:
    """Log a partner's exported model directory (trunk + private head) to the *partner's own* MLflow, experiment
    ``molfed-partner-<partner>``, with its private-task metrics; returns the run id. Never call it with the
    federation's tracking URI.

    One run per federation: the final job runs again on the kept round when the run selects an earlier round than
    the last, and the earlier export's run is then replaced (deleted), so the store holds the model that was kept."""
    tracker = Tracker(tracking_uri, f"molfed-partner-{partner}")
    earlier = tracker.client.search_runs([tracker.experiment_id], f"tags.`molfed.federation_run` = '{federation_run}'")
    for run in earlier:
        tracker.client.delete_run(run.info.run_id)
    run_id = tracker.start_run(
        f"{partner}-{federation_run}", tags={"molfed.kind": "partner-model", "molfed.federation_run": federation_run}
    )
    tracker.log_metrics(run_id, {f"{split}_{k}": v for split, m in metrics.items() for k, v in m.items()})
    tracker.client.log_artifacts(run_id, str(directory), "model")
    tracker.end_run(run_id)
    return run_id
