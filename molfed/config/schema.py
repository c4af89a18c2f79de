"""The run config's schema: one pydantic model per section, field bounds and per-field checks. Rules across keys are in
:mod:`molfed.config.rules`.

The JSON schema of these models is the form Prefect's UI renders for a deployment (the flow's one parameter). Each
model says, through :func:`_form`, in which order a chemist meets its fields (Prefect's form sorts by ``position``)
and which are advanced (last, titled "(advanced)": Prefect 3's form cannot fold a group); descriptions there are plain
text with their bounds spelled out (the form shows no ``minimum``/``maximum``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from molfed.config.base import Name, _Model
from molfed.config.rules import check_run
from molfed.federated.capabilities import strategy_names
from molfed.models.registry import encoder_names

ChampionMetric = Literal["rmse", "mae", "r2", "roc_auc", "pr_auc", "logloss"]
CHAMPION_METRICS: tuple[str, ...] = get_args(ChampionMetric)
"""Validation metrics the champion comparison can use (molfed.train.metrics' regression and classification metrics;
a test keeps the two lists equal: this module stays torch-free)."""

_ROLE = re.compile(r":\w+:`~?\.?([^`]+)`")  # Sphinx roles (":mod:`molfed.privacy`") -> their target
_ANGLED = re.compile(r"<([^<>\s]+)>")  # "<workspace>" would vanish in the form (read as an HTML tag)


def plain_text(text: str) -> str:
    """A description as the form shows it: one line, no Sphinx roles, ``<name>`` placeholders as ``{name}``."""
    return _ANGLED.sub(r"{\1}", _ROLE.sub(r"\1", " ".join(text.split())))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


def _bounds_text(prop: dict[str, Any]) -> str:
    """``"Allowed: 1 ≤ value ≤ 100000."`` from a property's (or its non-null ``anyOf`` branch's) JSON-schema bounds."""
    branch = next((b for b in prop.get("anyOf", []) if b.get("type") in ("integer", "number")), prop)
    low = next(
        (f"{_number(branch[k])} {op} " for k, op in (("minimum", "≤"), ("exclusiveMinimum", "<")) if k in branch), ""
    )
    high = next(
        (f" {op} {_number(branch[k])}" for k, op in (("maximum", "≤"), ("exclusiveMaximum", "<")) if k in branch), ""
    )
    return f"Allowed: {low}value{high}." if low or high else ""


def _form(*first: str, advanced: tuple[str, ...] = ()) -> ConfigDict:
    """Model config whose JSON schema orders the form: ``first`` fields, then the rest in declaration order, then
    ``advanced`` ones (titled "(advanced)"); every description plain, with its bounds."""

    def present(schema: dict[str, Any]) -> None:
        props: dict[str, dict[str, Any]] = schema.get("properties", {})
        middle = [n for n in props if n not in first and n not in advanced]
        for position, name in enumerate(n for n in (*first, *middle, *advanced) if n in props):
            prop = props[name]
            prop["position"] = position
            title = prop.get("title") or name.replace("_", " ").capitalize()
            prop["title"] = f"{title} (advanced)" if name in advanced else title
            text = " ".join(t for t in (plain_text(prop.get("description", "")), _bounds_text(prop)) if t)
            if text:
                prop["description"] = text
        if "description" in schema:
            schema["description"] = plain_text(schema["description"])

    extra: Callable[[dict[str, Any]], None] = present
    return ConfigDict(json_schema_extra=extra)  # type: ignore[typeddict-item]


class TaskSpec(_Model):
    """One prediction target shared by the federation."""

    model_config = _form()

    name: Name = Field(
        description="Task name; also the default label column in every partner library (letters, digits, _ -)."
    )

    type: Literal["regression", "classification"] = Field(
        "regression", description="regression (MSE loss) or binary classification (BCE-with-logits loss)."
    )
    unit: str | None = Field(
        None,
        max_length=32,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Unit of a regression task's labels, e.g. kcal/mol or log10(mol/L): shown on plot axes and in "
        "the report next to RMSE and MAE.",
    )


class PrivateTaskSpec(_Model):
    """A task only this partner has (MELLODDY-style): trained by the partner's private head, which never leaves the
    partner's workspace. Its labels and target scaling stay with the partner."""

    model_config = _form()

    name: Name = Field(description="Task name, unique within this partner (letters, digits, _ -).")
    type: Literal["regression", "classification"] = Field(
        "regression", description="regression (MSE loss) or binary classification (BCE-with-logits loss)."
    )
    column: str | None = Field(None, description="Column holding the labels; defaults to the task name.")

    @property
    def label_column(self) -> str:
        return self.column if self.column is not None else self.name


_DASK_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|ucx)://[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class DaskConfig(_Model):
    """Fan a partner's featurization out over a Dask cluster (Prefect's DaskTaskRunner), chunk by chunk.

    Only paths, row ranges, counts and digests travel to and from the workers; the workers read the library file
    and write their parts in the partner's workspace, so both must be reachable from every worker."""

    model_config = _form()

    address: str | None = Field(
        None,
        max_length=200,
        description="Scheduler address of an existing cluster (e.g. tcp://10.0.0.5:8786); null starts a local "
        "cluster of n_workers processes for this partner's featurization and closes it afterwards.",
    )
    n_workers: int = Field(
        2, ge=1, le=256, description="Worker processes of the local cluster (only when address is null)."
    )
    chunk_size: int = Field(
        50_000, ge=10, le=10_000_000, description="Library rows per Dask task (one part file per chunk)."
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None and not _DASK_ADDRESS.match(value):
            raise ValueError(f"got {value!r}, expected a scheduler address such as 'tcp://host:8786'")
        return value

    @model_validator(mode="after")
    def _check_workers(self) -> DaskConfig:
        if self.address is not None and "n_workers" in self.model_fields_set:
            raise ValueError("n_workers sizes a local cluster only; drop it when address is set")
        return self


class _PrivateTasks(_Model):
    """Fields a partner sets about its own tasks (in its run-config entry, or in its site config in sites mode)."""

    model_config = _form()

    shared_tasks: list[str] | None = Field(
        None,
        description="Top-level (shared) tasks this library has labels for; default all. [] for a partner with "
        "private tasks only: its updates then carry trunk weights only.",
    )
    private_tasks: list[PrivateTaskSpec] = Field(
        default_factory=list, description="Tasks only this partner has, learnt by a head that never leaves it."
    )
    report_private_metrics: bool = Field(
        True,
        description="Report validation/test metrics of private tasks to the federation run (metric names carry "
        "the private task names); false keeps even the names in the partner's workspace.",
    )
    export_tracking_uri: str | None = Field(
        None,
        description="Partner's own MLflow tracking URI to log its final model (trunk + private head) to, besides "
        "<workspace>/models/<run_id>/; never the federation's.",
    )

    @property
    def declares_tasks(self) -> bool:
        """Whether any of these fields differs from its default."""
        return bool(
            self.shared_tasks is not None
            or self.private_tasks
            or not self.report_private_metrics
            or self.export_tracking_uri
        )

    def _check_private_tasks(self, where: str) -> None:
        names = [t.name for t in self.private_tasks]
        for j, name in enumerate(names):
            if name in names[:j]:
                raise ValueError(f"{where}private_tasks.{j}.name: duplicate private task {name!r}")


class PartnerConfig(_PrivateTasks):
    """Where one partner's library lives. Only the name and paths ever leave the partner."""

    model_config = _form(
        "name",
        "path",
        "smiles_column",
        "label_columns",
        "workspace",
        advanced=(
            "shared_tasks",
            "private_tasks",
            "report_private_metrics",
            "export_tracking_uri",
            "dask",
            "tracking_user",
        ),
    )

    name: Name = Field(description="Partner name, used in metric names and logs (letters, digits, _ -).")
    path: Path | None = Field(
        None, description="Library file (.csv, .csv.gz, .tsv, .sdf, .parquet); local mode only, omit in sites mode."
    )
    smiles_column: str = Field("smiles", description="Column holding SMILES (ignored for SDF files).")
    label_columns: dict[str, str] = Field(
        default_factory=dict, description="Task name -> column in this library; defaults to the task name."
    )
    workspace: Path | None = Field(
        None,
        description="Partner-private directory for caches, splits and rejects (default: workspaces/<name>).",
    )
    dask: DaskConfig | None = Field(
        None, description="Featurize this partner's library over a Dask cluster (null: in this process / data.workers)."
    )
    tracking_user: str | None = Field(
        None,
        description="Sites mode: the partner's own MLflow user (basic-auth app). The coordinator gives it READ on "
        "the federation's experiment and registered model and EDIT on the partner's experiment "
        "'<experiment>.site-<name>' only; it gets nothing on other partners' experiments.",
        max_length=256,
    )

    def column_for(self, task: str) -> str:
        """Return the library column holding ``task``'s labels."""
        return self.label_columns.get(task, task)

    def has_shared(self, task: str) -> bool:
        """Whether this library has labels for shared ``task``."""
        return self.shared_tasks is None or task in self.shared_tasks


class StandardizeConfig(_Model):
    model_config = _form()

    largest_fragment: bool = Field(True, description="Keep the largest organic fragment (strip salts, solvents).")
    neutralize: bool = Field(True, description="Neutralize charges where a neutral form exists.")
    canonical_tautomer: bool = Field(False, description="Replace each molecule by RDKit's canonical tautomer.")


class DataConfig(_Model):
    model_config = _form()

    standardize: StandardizeConfig = Field(default_factory=StandardizeConfig)
    duplicates: Literal["merge", "keep_first", "reject"] = Field(
        "merge",
        description="Duplicates (same InChIKey) within a partner: average labels, keep first, or reject.",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Per-partner scaffold split: train, validation, test fractions."
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Processes per partner for featurizing a library (parse, standardize, graphs); same result "
        "for any value. Worth it from a few thousand molecules on.",
    )

    @field_validator("split_fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1.0) > 1e-6 or value[0] <= 0:
            raise ValueError(f"got {list(value)}, expected three non-negative fractions summing to 1, train > 0")
        return value


class ModelConfig(_Model):
    model_config = _form()

    encoder: str = Field(
        "gine",
        description=f"GNN encoder, one of {list(encoder_names())}.",
        json_schema_extra={"enum": list(encoder_names())},  # a dropdown in Prefect's form
    )
    hidden_channels: int = Field(64, ge=4, le=2048, description="Width of node and graph embeddings (channels).")
    num_layers: int = Field(3, ge=1, le=12, description="Message-passing layers.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability in the encoder and head (0 = off).")
    readout: Literal["mean", "sum", "max"] = Field("mean", description="Graph pooling (GINE only).")
    head_layers: int = Field(2, ge=1, le=6, description="Layers of the MLP head.")

    @field_validator("encoder")
    @classmethod
    def _check_encoder(cls, value: str) -> str:
        if value not in encoder_names():  # the live registry: an encoder registered after import counts
            raise ValueError(f"unknown encoder {value!r}; choose from {list(encoder_names())}")
        return value


class TrainConfig(_Model):
    model_config = _form()

    epochs: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Local epochs (passes over the partner's training split) per round, and per baseline round.",
    )
    batch_size: int = Field(32, ge=1, le=65_536, description="Mini-batch size in molecules.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Local optimizer.")
    lr: float = Field(
        3e-3,
        gt=0.0,
        le=10.0,
        description="Local learning rate (e.g. 0.001 for adam; type the value, the form steps by 0.01).",
    )
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay coefficient (0 = off).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine",
        description="Local learning rate across rounds: constant, or cosine (from lr down to a tenth of it at the "
        "last round). The baselines follow the same schedule over their rounds.",
    )
    warmup_rounds: int = Field(
        0, ge=0, le=10_000, description="Rounds over which the learning rate rises linearly to lr (0 = none)."
    )


class FederationConfig(_Model):
    model_config = _form(
        "rounds",
        "strategy",
        "strategy_options",
        "selection",
        "patience",
        advanced=("partner_retries", "task_timeout_s", "round_timeout_s", "offline_after_s"),
    )

    rounds: int = Field(
        30,
        ge=1,
        le=100_000,
        description="Federated rounds: each partner trains locally, then the coordinator aggregates.",
    )
    strategy: str = Field(
        "fedavgm",
        description=f"Aggregation strategy, one of {list(strategy_names())}.",
        json_schema_extra={"enum": list(strategy_names())},  # a dropdown in Prefect's form
    )
    strategy_options: dict[str, float] = Field(
        default_factory=dict,
        description="Strategy hyperparameters by name, e.g. {proximal_mu: 0.01} for fedprox, {server_lr: 0.01} "
        "for fedadam, {byzantine: 1} for krum; unknown names are rejected when the strategy is built.",
    )
    min_partners: int | None = Field(
        None,
        ge=1,
        description="Quorum: fewest successful partners a round needs, out of those sampled that round "
        "(default: all sampled partners); also the fewest partners that must be ready to start.",
    )
    fraction_fit: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Fraction of ready partners asked to train each round (seeded draw per round; 1 = all).",
    )
    min_fit_partners: int = Field(
        1, ge=1, description="Fewest partners asked per round, whatever fraction_fit gives (capped at all partners)."
    )
    selection: Literal["best_val", "last"] = Field(
        "best_val",
        description="Which round's global model the run tests, reports and registers. best_val: the round with the "
        "best validation value of the headline metric (RMSE; ROC-AUC when every task is a classification) over all "
        "partners' validation splits; last: the last round. The baselines select the same way.",
    )
    patience: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="With selection best_val: stop after this many rounds without a better validation value "
        "(early stopping; the baselines stop the same way). Off by default.",
    )
    partner_retries: int = Field(
        1, ge=0, le=10, description="Retries of a failed partner task (attempts after the first)."
    )
    task_timeout_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="Local mode: seconds one attempt of a partner's round or final task may run before it fails "
        "(then it is retried); off by default. It interrupts Python code, not one long blocking call.",
    )
    round_timeout_s: float = Field(
        900.0, gt=0, description="Sites mode: seconds to wait for a partner's job before counting it as failed."
    )
    offline_after_s: float = Field(
        60.0,
        gt=0,
        description="Sites mode: a job still unclaimed after this many seconds fails at once when no worker of the "
        "partner's pool is online (instead of waiting out round_timeout_s).",
    )

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        if value not in strategy_names():  # the live registry: a strategy registered after import counts
            raise ValueError(f"unknown strategy {value!r}; choose from {list(strategy_names())}")
        return value


class BaselineConfig(_Model):
    model_config = _form()

    local_only: bool = Field(True, description="Train one model per partner on its own data, same budget.")
    pooled: bool = Field(True, description="Train one model on the union of partners (simulation only).")
    contributions: bool = Field(
        False,
        description="Leave-one-partner-out contribution estimate: one extra federation per partner without it "
        "(same seed and budget; costs one federation per partner).",
    )
    fine_tune_epochs: int = Field(
        0,
        ge=0,
        le=1_000,
        description="Personalization: after the last round, each partner trains the kept global model on its own "
        "data for up to this many epochs, keeps the epoch (or the global model itself) that validates best on its "
        "own validation split, and reports it as the column 'federated+fine-tune'; the fine-tuned model stays "
        "with the partner. 0 = off. Local mode only for now.",
    )


class CalibrationConfig(_Model):
    """Trust in every prediction: conformal intervals (regression), calibrated probabilities and conformal sets
    (classification) and an applicability-domain flag, calibrated across partners on the kept model
    (docs/user-guide.md#prediction-intervals-and-the-applicability-domain)."""

    model_config = _form("enabled", "levels", "method")

    enabled: bool | None = Field(
        None,
        description="Calibrate the kept model and ship the calibration with it. Default (empty): on in local mode, "
        "off in sites mode (there every site must list 'calibrate' in its policy's jobs).",
    )
    levels: list[float] = Field(
        default_factory=lambda: [0.8, 0.9, 0.95],
        min_length=1,
        max_length=6,
        description="Nominal coverages of the intervals and sets, each strictly between 0.5 and 1, e.g. 0.9.",
    )
    method: Literal["federated", "mondrian"] = Field(
        "federated",
        description="federated: one calibration from all partners' pooled score histograms (valid when a new "
        "molecule is like a random partner's). mondrian: each partner also builds its own, measures with it and keeps "
        "it in its workspace; the shipped model carries the federated one.",
    )
    source: Literal["holdout", "val"] = Field(
        "holdout",
        description="holdout: carve 'fraction' of each partner's training split, by scaffold, for calibration only "
        "(trained on by nobody). val: reuse the validation split (no molecules taken from training, but the round "
        "was selected on it: slightly optimistic).",
    )
    fraction: float = Field(
        0.1, ge=0.02, le=0.5, description="Share of each partner's training split held out for calibration (holdout)."
    )
    domain_level: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="The applicability-domain threshold: at least this share of calibration molecules score inside.",
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[float]) -> list[float]:
        if any(not 0.5 < v < 1.0 for v in value) or len(set(value)) != len(value):
            raise ValueError(f"got {value}, expected distinct numbers strictly between 0.5 and 1, e.g. [0.8, 0.9]")
        return sorted(value)

    def active(self, mode: str) -> bool:
        """Whether the run calibrates (``enabled``, else on in local mode)."""
        return self.enabled if self.enabled is not None else mode == "local"


class TrackingConfig(_Model):
    model_config = _form()

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else SQLite under ./mlruns."
    )
    experiment: str = Field("molfed", description="MLflow experiment name.")
    registered_model: str | None = Field("molfed-model", description="Registry name for the final model.")
    parent_run_id: SkipJsonSchema[str | None] = Field(  # not in the JSON schema: Prefect's form hides it
        None,
        description="Internal: MLflow run to nest this federation under (set by the leave-one-partner-out "
        "estimate for its extra federations, which then log no model); leave unset.",
    )


class ScheduleConfig(_Model):
    model_config = _form()

    cron: str = Field("0 3 * * 1", description="Cron expression for scheduled retraining (default Monday 03:00).")
    timezone: str = Field("UTC", description="IANA time zone of the cron expression.")
    active: bool = Field(False, description="Whether the schedule is active once deployed.")


class ChampionConfig(_Model):
    model_config = _form()

    enabled: bool = Field(True, description="Compare the new model with the registry's champion and promote it.")
    alias: str = Field("champion", description="Registry alias of the production model.")
    metric: ChampionMetric = Field(
        "rmse",
        description="Validation metric of the comparison, over all partners' validation splits: rmse, mae or r2 "
        "(regression), roc_auc, pr_auc or logloss (classification).",
    )
    min_improvement: float = Field(
        0.0, ge=0.0, description="Relative improvement required to promote, e.g. 0.02 = 2 % better."
    )


class PrivacyConfig(_Model):
    """Differential privacy of the federation: DP-SGD at each partner or noise on whole partner updates."""

    model_config = _form()

    mode: Literal["off", "sample", "client"] = Field(
        "off",
        description="off; sample: DP-SGD at every partner, each molecule a sample (per-molecule gradient clipping "
        "+ noise); client: each partner's whole update clipped, noise added at aggregation.",
    )
    noise_multiplier: float = Field(
        1.0, gt=0.0, le=1000.0, description="Gaussian noise standard deviation as a multiple of max_grad_norm."
    )
    max_grad_norm: float = Field(
        1.0,
        gt=0.0,
        le=1e6,
        description="L2 bound: of each molecule's gradient (sample) or of each partner's update delta (client).",
    )
    delta: float = Field(1e-5, gt=0.0, lt=0.1, description="Target delta of the reported epsilon.")
    epsilon_budget: float | None = Field(
        None,
        gt=0.0,
        description="Largest epsilon allowed (per partner at sample level); the run refuses a round that would "
        "exceed it. None: no limit (epsilon is still logged).",
    )
    noise_seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Reproducible noise for experiments only (anyone with the config can regenerate it); "
        "None draws noise from the operating system, so DP runs are then not bitwise repeatable.",
    )


class IntegrityConfig(_Model):
    """Integrity of updates: signatures and screening before aggregation (see molfed/federated/integrity.py)."""

    model_config = _form()

    signing: bool = Field(
        False,
        description="Partners sign each update (Ed25519) over run id, round, partner name and a weights digest; the "
        "coordinator rejects unsigned, forged, replayed or altered updates.",
    )
    public_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Partner name -> Ed25519 public key (base64 of 32 raw bytes, or PEM) as printed by "
        "`molfed keygen`. Required for every partner in sites mode; in local mode (simulation) a missing key is "
        "generated in the partner's workspace and read from there.",
    )
    coordinator_key: Path | None = Field(
        None,
        description="Sites mode: the coordinator's Ed25519 private key (PEM file, from `molfed keygen "
        "--coordinator-key FILE`) that signs every job request; sites act only on requests signed by a key in their "
        "own trusted_coordinators. Relative paths resolve against the config file's folder.",
    )
    max_delta_norm: float | None = Field(
        None, gt=0.0, le=1e12, description="Reject an update whose L2 distance to the global weights exceeds this."
    )
    max_norm_ratio: float | None = Field(
        None,
        ge=1.0,
        le=1e6,
        description="Reject an update whose delta is longer than this multiple of the round's median delta (e.g. 3).",
    )
    min_cosine: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Reject an update whose delta has cosine below this with the round's coordinate-wise median "
        "delta (e.g. 0.0 rejects sign-flipped updates).",
    )
    min_reference: int = Field(
        3, ge=2, le=10_000, description="Fewest updates for the relative and direction checks to run (honest majority)."
    )

    @property
    def screens(self) -> bool:
        """Whether any delta screen is configured."""
        return any(v is not None for v in (self.max_delta_norm, self.max_norm_ratio, self.min_cosine))


class SecureAggregationConfig(_Model):
    """Pairwise-masked secure aggregation: the coordinator sees only masked vectors and their sum."""

    model_config = _form()

    enabled: bool = Field(False, description="Mask updates so that only their weighted sum is revealed.")
    threshold: int | None = Field(
        None,
        ge=2,
        le=10_000,
        description="Partners needed to unmask a round (Shamir threshold); default a strict majority. Up to "
        "partners - threshold may drop out after sharing keys.",
    )
    scale_bits: int = Field(
        16, ge=4, le=32, description="Fixed-point fractional bits: the mean is exact to about 2^-(bits+1)."
    )


class RunConfig(_Model):
    """A whole federation: partners, tasks, model, training, strategy and tracking."""

    model_config = _form(
        "name",
        "partners",
        "tasks",
        "federation",
        "model",
        "train",
        "baselines",
        "calibration",
        advanced=("data", "tracking", "champion", "schedule", "privacy", "integrity", "secure_aggregation"),
    )

    name: str = Field("federation", description="Run name: MLflow and Prefect name each run '{name}-{start time}'.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for splits, initial weights and data order.")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="auto picks CUDA when available.")
    mode: Literal["local", "sites"] = Field(
        "local",
        description="local: every partner in this process (simulation, demo). sites: each partner runs its own "
        "site agent (molfed site-agent) on pool 'partner-<name>' with its own site config; this config names "
        "partners only.",
    )
    tasks: list[TaskSpec] = Field(min_length=1, description="Prediction targets.")
    partners: list[PartnerConfig] = Field(min_length=1, description="Partners taking part.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    baselines: BaselineConfig = Field(default_factory=BaselineConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    champion: ChampionConfig = Field(default_factory=ChampionConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    schedule: ScheduleConfig | None = Field(None, description="Retraining schedule of the deployment (off if absent).")
    integrity: IntegrityConfig = Field(default_factory=IntegrityConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> RunConfig:
        check_run(self)  # the rules across keys: molfed.config.rules
        return self

    @property
    def quorum(self) -> int:
        """Fewest successful partners a round needs."""
        return self.federation.min_partners or len(self.partners)

    def workspace_for(self, partner: PartnerConfig) -> Path:
        return partner.workspace if partner.workspace is not None else Path("workspaces") / partner.name
