"""Experiment configuration: pydantic models validated once, at the edge.

A YAML file is loaded with :func:`load_config`; the resulting :class:`RunConfig` is the single parameter of the
Prefect flow (Prefect renders it as a form). Below the flow, functions take explicit keyword arguments.

Relative partner paths and workspaces are resolved against the directory of the YAML file, so a config means the
same thing from any working directory.
"""

from __future__ import annotations

import errno
import re
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from molfed.errors import ConfigError
from molfed.federated.capabilities import caps, strategy_names
from molfed.models.registry import encoder_names
from molfed.site.policy import SitePolicy

#: Partner names that would collide with the cross-partner summaries ``{split}_{metric}.worst`` / ``.std``.
RESERVED_PARTNER_NAMES = ("worst", "std")
_MAX_ERRORS = 5  # validation problems shown in one ConfigError
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")  # config keys shown as they are; others (e.g. with newlines) as repr
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
"""Partner, task (shared and private) and site names, matched in full: they become parts of MLflow metric names
(``test_rmse.<task>.<partner>``), tags, pool and experiment names. ASCII letters, digits, ``_`` and ``-``: MLflow
refuses most other characters in metric names, and ``.`` is molfed's separator between the parts."""
_NAME_RULE = "expected letters, digits, '_' or '-', starting with a letter or digit (max 63 characters; no '.'"


def check_name(value: str) -> str:
    """Return ``value`` if it is a valid partner, task or site name (:data:`_NAME`).

    Raises
    ------
    ValueError
        ``got '<value>', expected letters, digits, ...`` (pydantic prefixes the config key).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"got {_short(value)}, {_NAME_RULE}: it separates names in metric names)")
    return value


Name = Annotated[str, AfterValidator(check_name)]


class _Model(BaseModel):
    # allow_inf_nan=False: a NaN passes every ``ge``/``le`` bound and the fraction checks (comparisons are False).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TaskSpec(_Model):
    """One prediction target shared by the federation."""

    name: Name = Field(
        description="Task name; also the default label column in every partner library (letters, digits, _ -)."
    )

    type: Literal["regression", "classification"] = Field(
        "regression", description="regression (MSE loss) or binary classification (BCE-with-logits loss)."
    )


class PrivateTaskSpec(_Model):
    """A task only this partner has (MELLODDY-style): trained by the partner's private head, which never leaves the
    partner's workspace. Its labels and target scaling stay with the partner."""

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
    largest_fragment: bool = Field(True, description="Keep the largest organic fragment (strip salts, solvents).")
    neutralize: bool = Field(True, description="Neutralize charges where a neutral form exists.")
    canonical_tautomer: bool = Field(False, description="Replace each molecule by RDKit's canonical tautomer.")


class DataConfig(_Model):
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
    encoder: str = Field(
        "gine",
        description=f"GNN encoder, one of {list(encoder_names())}.",
        json_schema_extra={"enum": list(encoder_names())},  # a dropdown in Prefect's form
    )
    hidden_channels: int = Field(64, ge=4, le=2048, description="Width of node and graph embeddings.")
    num_layers: int = Field(3, ge=1, le=12, description="Message-passing layers.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in the encoder and head.")
    readout: Literal["mean", "sum", "max"] = Field("mean", description="Graph pooling (GINE only).")
    head_layers: int = Field(2, ge=1, le=6, description="Layers of the MLP head.")

    @field_validator("encoder")
    @classmethod
    def _check_encoder(cls, value: str) -> str:
        if value not in encoder_names():  # the live registry: an encoder registered after import counts
            raise ValueError(f"unknown encoder {value!r}; choose from {list(encoder_names())}")
        return value


class TrainConfig(_Model):
    epochs: int = Field(2, ge=1, le=10_000, description="Local epochs per round (and per baseline round).")
    batch_size: int = Field(32, ge=1, le=65_536, description="Mini-batch size in molecules.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Local optimizer.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Local learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay.")


class FederationConfig(_Model):
    rounds: int = Field(10, ge=1, le=100_000, description="Federated rounds.")
    strategy: str = Field(
        "fedavg",
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
    partner_retries: int = Field(1, ge=0, le=10, description="Retries of a failed partner task.")
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
    local_only: bool = Field(True, description="Train one model per partner on its own data, same budget.")
    pooled: bool = Field(True, description="Train one model on the union of partners (simulation only).")
    contributions: bool = Field(
        False,
        description="Leave-one-partner-out contribution estimate: one extra federation per partner without it "
        "(same seed and budget; costs one federation per partner).",
    )


class TrackingConfig(_Model):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else SQLite under ./mlruns."
    )
    experiment: str = Field("molfed", description="MLflow experiment name.")
    registered_model: str | None = Field("molfed-model", description="Registry name for the final model.")
    parent_run_id: str | None = Field(
        None,
        description="Internal: MLflow run to nest this federation under (set by the leave-one-partner-out "
        "estimate for its extra federations, which then log no model); leave unset.",
        json_schema_extra={"readOnly": True},
    )


class ScheduleConfig(_Model):
    cron: str = Field("0 3 * * 1", description="Cron expression for scheduled retraining (default Monday 03:00).")
    timezone: str = Field("UTC", description="IANA time zone of the cron expression.")
    active: bool = Field(False, description="Whether the schedule is active once deployed.")


class ChampionConfig(_Model):
    enabled: bool = Field(True, description="Compare the new model with the registry's champion and promote it.")
    alias: str = Field("champion", description="Registry alias of the production model.")
    metric: str = Field("rmse", description="Validation metric of the comparison (e.g. rmse, mae, r2, roc_auc).")
    min_improvement: float = Field(
        0.0, ge=0.0, description="Relative improvement required to promote, e.g. 0.02 = 2 % better."
    )


class PrivacyConfig(_Model):
    """Differential privacy of the federation (see :mod:`molfed.privacy`)."""

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

    name: str = Field("federation", description="Run name shown in MLflow and Prefect.")
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
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    champion: ChampionConfig = Field(default_factory=ChampionConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    schedule: ScheduleConfig | None = Field(None, description="Retraining schedule of the deployment (off if absent).")
    integrity: IntegrityConfig = Field(default_factory=IntegrityConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> RunConfig:
        _no_duplicates([p.name for p in self.partners], "partner name")
        _no_duplicates([t.name for t in self.tasks], "task name")
        for i, partner in enumerate(self.partners):
            _check_partner_tasks(partner, [t.name for t in self.tasks], f"partners.{i}.")
            if self.mode == "sites" and partner.declares_tasks:
                raise ValueError(
                    f"partners.{i}: sites mode: shared_tasks, private_tasks, report_private_metrics and "
                    "export_tracking_uri belong in the partner's own site config, which the coordinator never sees"
                )
            if partner.export_tracking_uri and partner.export_tracking_uri == self.tracking.tracking_uri:
                raise ValueError(
                    f"partners.{i}.export_tracking_uri: is the federation's tracking URI; a partner's own model "
                    "(with its private head) must go to the partner's own MLflow"
                )
            if self.privacy.mode == "client" and partner.shared_tasks == []:
                raise ValueError(
                    f"partners.{i}.shared_tasks: privacy.mode 'client' needs every partner's update to carry the "
                    f"shared head, but partner {partner.name!r} has no shared task"
                )
            if partner.shared_tasks == [] and (self.secure_aggregation.enabled or self.integrity.screens):
                raise ValueError(
                    f"partners.{i}.shared_tasks: partner {partner.name!r} sends the trunk only, but secure aggregation "
                    "and integrity delta screens need every update to carry the same tensors; give it a shared task "
                    "or turn them off"
                )
            if partner.private_tasks and self.baselines.pooled:
                raise ValueError(
                    f"baselines.pooled: partner {partner.name!r} has private tasks, whose labels never leave it; "
                    "set baselines.pooled false"
                )
        for partner in self.partners:
            if self.mode == "local" and partner.path is None:
                raise ValueError(f"partner {partner.name!r}: path is required in local mode")
            if self.mode == "sites" and (partner.path is not None or partner.workspace is not None or partner.dask):
                raise ValueError(
                    f"partner {partner.name!r}: sites mode takes partner names only; the path, workspace and "
                    "dask settings belong in the partner's own site config"
                )
        if self.mode == "sites" and not caps(self.federation.strategy).sites:
            raise ValueError(
                f"federation.strategy: {self.federation.strategy!r} sends control variates to partners, which sites "
                "mode does not carry yet; choose another strategy or local mode"
            )
        if self.mode == "sites" and self.baselines.pooled:
            raise ValueError("baselines.pooled needs every partner's data in one place; set it false in sites mode")
        _check_privacy(self.privacy.mode, self.federation.strategy)
        _check_sampling(self.federation, len(self.partners))
        for partner in self.partners:
            if partner.name in RESERVED_PARTNER_NAMES:
                raise ValueError(
                    f"partner name {partner.name!r} is reserved (metrics such as test_rmse.{partner.name} "
                    "summarize all partners); choose another"
                )
        _check_task_names(self)
        _check_integrity(self)
        return self

    @property
    def quorum(self) -> int:
        """Fewest successful partners a round needs."""
        return self.federation.min_partners or len(self.partners)

    def workspace_for(self, partner: PartnerConfig) -> Path:
        return partner.workspace if partner.workspace is not None else Path("workspaces") / partner.name


def _check_task_names(config: RunConfig) -> None:
    """Task names that would make two metrics share a name (``test_rmse.<task>`` vs ``test_rmse.<partner>``)."""
    partners = {p.name for p in config.partners}
    tasks = [(f"tasks.{i}.name", t.name) for i, t in enumerate(config.tasks)]
    for i, partner in enumerate(config.partners):
        tasks += [(f"partners.{i}.private_tasks.{j}.name", t.name) for j, t in enumerate(partner.private_tasks)]
    for key, name in tasks:
        if name in RESERVED_PARTNER_NAMES:
            raise ValueError(f"{key}: task name {name!r} is reserved (test_rmse.{name} summarizes all partners)")
        if name in partners:
            raise ValueError(
                f"{key}: task {name!r} is also a partner's name, so test_rmse.{name} would name two metrics; "
                "rename one of them"
            )


def _check_privacy(mode: str, strategy: str) -> None:
    from molfed.federated.capabilities import names_where

    if mode == "client" and not caps(strategy).client_dp:
        raise ValueError(
            f"privacy.mode 'client' needs a strategy that averages updates, got federation.strategy {strategy!r}; "
            f"choose from {names_where('client_dp')}"
        )
    if mode == "sample" and not caps(strategy).sample_dp:
        raise ValueError(
            f"privacy.mode 'sample': federation.strategy {strategy!r} sends partner statistics computed without "
            "noise; choose another strategy"
        )


def _check_sampling(federation: FederationConfig, n_partners: int) -> None:
    """Refuse sampling / quorum settings under which every round would fail its quorum."""
    from molfed.federated.sampling import sample_size

    f = federation
    if f.min_fit_partners > n_partners:
        raise ValueError(f"federation.min_fit_partners: got {f.min_fit_partners}, expected at most {n_partners}")
    quorum = f.min_partners
    if quorum is not None and quorum > n_partners:
        raise ValueError(f"federation.min_partners: got {quorum}, expected at most {n_partners}")
    k = sample_size(n_partners, f.fraction_fit, f.min_fit_partners)
    if quorum is not None and quorum > k:
        raise ValueError(
            f"federation.min_partners: got {quorum}, but only {k} of {n_partners} partners are asked per round "
            f"(fraction_fit {f.fraction_fit:g}, min_fit_partners {f.min_fit_partners}); raise "
            "federation.fraction_fit or federation.min_fit_partners, or lower federation.min_partners"
        )


def _check_integrity(config: RunConfig) -> None:
    """Refuse integrity and secure-aggregation settings that cannot work together (messages name the key)."""
    names = [p.name for p in config.partners]
    integrity, secure = config.integrity, config.secure_aggregation
    unknown = sorted(set(integrity.public_keys) - set(names))
    if unknown:
        raise ValueError(f"integrity.public_keys: unknown partner(s) {unknown}; partners are {sorted(names)}")
    for name, text in integrity.public_keys.items():
        problem = _public_key_problem(text)
        if problem:
            raise ValueError(f"integrity.public_keys.{name}: {problem}")
    missing = sorted(set(names) - set(integrity.public_keys))
    if integrity.signing and config.mode == "sites" and missing:
        raise ValueError(
            f"integrity.public_keys: sites mode needs every partner's key (run `molfed keygen` at each site); "
            f"missing {missing}"
        )
    if not secure.enabled:
        return
    from molfed.federated.capabilities import names_where

    strategy = config.federation.strategy
    if not caps(strategy).secure_sum:
        usable = names_where("secure_sum")
        raise ValueError(
            f"secure_aggregation.enabled: strategy {strategy!r} needs individual updates (or, for scaffold, extra "
            f"tensors) that secure aggregation hides; set federation.strategy to one of {usable} or turn it off"
        )
    if config.privacy.mode == "client":
        raise ValueError(
            "secure_aggregation.enabled: privacy.mode 'client' clips each partner's update at the coordinator, which "
            "secure aggregation hides; use privacy.mode 'sample' or turn secure aggregation off"
        )
    if integrity.screens:
        raise ValueError(
            "secure_aggregation.enabled: integrity.max_delta_norm / max_norm_ratio / min_cosine look at individual "
            "updates, which secure aggregation hides; remove them or turn secure aggregation off"
        )
    if len(names) < 2:
        raise ValueError("secure_aggregation.enabled: needs at least 2 partners (a sum of one update is that update)")
    if secure.threshold is not None and secure.threshold > len(names):
        raise ValueError(
            f"secure_aggregation.threshold: got {secure.threshold}, expected at most {len(names)} (the partners)"
        )


def _public_key_problem(text: str) -> str | None:
    from molfed.federated.signing import load_public_key

    try:
        load_public_key(text)
    except ValueError as exc:
        return str(exc)
    return None


def _check_partner_tasks(partner: PartnerConfig, tasks: Sequence[str], where: str) -> None:
    """Shared and private tasks of one partner: known, distinct, at least one, each reading its own column."""
    task_names = set(tasks)
    unknown = sorted(set(partner.label_columns) - task_names)
    if unknown:
        raise ValueError(
            f"{where}label_columns: partner {partner.name!r}: label_columns names unknown task(s) {unknown}; "
            f"tasks are {sorted(task_names)}"
        )
    unknown = sorted(set(partner.shared_tasks or ()) - task_names)
    if unknown:
        raise ValueError(f"{where}shared_tasks: unknown task(s) {unknown}; tasks are {sorted(task_names)}")
    partner._check_private_tasks(where)
    for j, task in enumerate(partner.private_tasks):
        if task.name in task_names:
            raise ValueError(
                f"{where}private_tasks.{j}.name: {task.name!r} is a shared task (top-level tasks); rename the private "
                "task or drop it"
            )
    shared = [t for t in tasks if partner.has_shared(t)]
    if not shared and not partner.private_tasks:
        raise ValueError(f"{where}shared_tasks: partner {partner.name!r} has no task; list shared or private tasks")
    readers: dict[str, str] = {}
    columns = [(partner.column_for(t), t, "label_columns") for t in shared]
    columns += [(t.label_column, t.name, f"private_tasks.{j}.column") for j, t in enumerate(partner.private_tasks)]
    for column, name, key in columns:
        who = f"{where}{key}: partner {partner.name!r}"
        if column == partner.smiles_column:
            raise ValueError(f"{who}: task {name!r} reads the SMILES column {column!r}")
        if column in readers:
            raise ValueError(f"{who}: tasks {readers[column]!r} and {name!r} both read column {column!r}")
        readers[column] = name


def _no_duplicates(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping.

    Raises
    ------
    ConfigError
        If an override is not of the form ``key=value`` or walks through a non-container.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. federation.rounds=5")
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = _child(node, part, key)
        try:
            value = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError):
            value = text
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])!r} is not a mapping or list")
    return raw


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if isinstance(node, dict):
        return node.setdefault(part, {})
    raise ConfigError(f"--set {key}: cannot descend into {part!r}")


def _index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: got index {part!r}, expected 0..{len(node) - 1}")
    return int(part)


def parse_config(raw: Any, *, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`, resolving relative paths against ``base_dir``.

    Raises
    ------
    ConfigError
        One line per problem, each naming the config key, e.g. ``demo.yaml: train.epochs: ... (got -1)``.
    """
    if raw is None:
        raise ConfigError(f"{source}: the config is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    if base_dir is None:
        return config
    if config.mode == "sites":
        key = config.integrity.coordinator_key
        if key is None:
            return config
        integrity = config.integrity.model_copy(update={"coordinator_key": _resolve(key, base_dir)})
        return config.model_copy(update={"integrity": integrity})
    partners = [
        p.model_copy(
            update={
                "path": _resolve(p.path, base_dir, f"{source}: partners.{i}.path") if p.path is not None else None,
                "workspace": _resolve(config.workspace_for(p), base_dir, f"{source}: partners.{i}.workspace"),
            }
        )
        for i, p in enumerate(config.partners)
    ]
    _no_shared_workspace(partners, source)
    return config.model_copy(update={"partners": partners})


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(p if isinstance(p, str) and _KEY.fullmatch(p) else _short(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("missing", "value_error") else f" (got {_short(err.get('input'))})"
        lines.append(f"{source}: {loc}: {msg}{got}")
    more = f"; ... and {len(lines) - _MAX_ERRORS} more" if len(lines) > _MAX_ERRORS else ""
    return "; ".join(lines[:_MAX_ERRORS]) + more


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, without building a huge repr (YAML aliases can nest deeply)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_shared_workspace(partners: Sequence[PartnerConfig], source: str) -> None:
    """Partners' workspaces must differ: each rewrites its own ``rejects.csv`` there."""
    owner: dict[Path | None, str] = {}
    for i, partner in enumerate(partners):
        if partner.workspace in owner:
            raise ConfigError(
                f"{source}: partners.{i}.workspace: partners {owner[partner.workspace]!r} and {partner.name!r} "
                "share a workspace; give each partner its own"
            )
        owner[partner.workspace] = partner.name


def _resolve(path: Path, base_dir: Path, key: str = "path") -> Path:
    """``path`` made absolute against ``base_dir``, symbolic links resolved (a link loop is a ConfigError)."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    try:
        return (base_dir / path).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError on a symbolic-link loop
        why = "symbolic-link loop" if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP else type(exc).__name__
        raise ConfigError(f"{key}: {base_dir / path}: {why}; point it at the file itself") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, override and validate a YAML config.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML (with line and column), or fails validation.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides)
    return parse_config(raw, source=str(path), base_dir=path.parent.resolve())


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__})") from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError(f"{path}: YAML nested too deeply") from None


class SiteConfig(_PrivateTasks):
    """A partner's own configuration, kept on the partner's side; the coordinator never sees it."""

    name: Name = Field(description="This partner's name, as in the coordinator's config (letters, digits, _ -).")
    path: Path = Field(description="Library file.")
    smiles_column: str = Field("smiles", description="Column holding SMILES (ignored for SDF files).")
    label_columns: dict[str, str] = Field(default_factory=dict, description="Task name -> column.")
    workspace: Path = Field(description="Partner-private directory for caches, splits, rejects, control state.")
    dask: DaskConfig | None = Field(
        None, description="Featurize this site's library over a Dask cluster (null: in this process / data.workers)."
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Threads the site agent's training uses (default: every core of the machine). Lower it when "
        "several sites share one machine (a test or a benchmark).",
    )
    trusted_coordinators: dict[str, str] = Field(
        default_factory=dict,
        description="Name -> Ed25519 public key (base64 or PEM, as `molfed keygen --coordinator-key` prints) of the "
        "coordinators whose signed job requests this site acts on. Empty: the site agent refuses to start.",
    )
    policy: SitePolicy = Field(
        default_factory=SitePolicy, description="What this site agrees to do (default deny; see molfed/site/policy.py)."
    )

    @model_validator(mode="after")
    def _check(self) -> SiteConfig:
        self._check_private_tasks("")
        for name, text in self.trusted_coordinators.items():
            problem = _public_key_problem(text)
            if problem:
                raise ValueError(f"trusted_coordinators.{name}: {problem}")
        return self

    def as_partner(self) -> PartnerConfig:
        return PartnerConfig(
            name=self.name,
            path=self.path,
            smiles_column=self.smiles_column,
            label_columns=self.label_columns,
            workspace=self.workspace,
            dask=self.dask,
            **{k: getattr(self, k) for k in _PrivateTasks.model_fields},
        )


def site_run_config(config: RunConfig, site: SiteConfig, *, source: str = "site config") -> RunConfig:
    """The federation's run config as this site runs it: local mode, this partner only, no pooled baseline.

    Raises
    ------
    ConfigError
        If the site's tasks do not fit the federation's (e.g. a private task named like a shared task).
    """
    raw = config.model_dump(mode="json")
    raw.update(mode="local", partners=[site.as_partner().model_dump(mode="json", exclude_unset=True)])
    raw["baselines"]["pooled"] = False
    raw["federation"]["min_partners"] = None  # the quorum is the coordinator's; this view holds one partner
    # signing keys and secure aggregation are the federation's (read by the partner job from its config); this
    # view keeps only the site's own public key and leaves the protocol off (it holds one partner)
    raw["integrity"]["public_keys"] = {k: v for k, v in raw["integrity"]["public_keys"].items() if k == site.name}
    raw["secure_aggregation"]["enabled"] = False
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source).replace("partners.0.", "")) from None


def load_site_config(path: str | Path) -> SiteConfig:
    """Load a partner's site config (YAML); relative paths resolve against its directory.

    Raises
    ------
    ConfigError
        As :func:`load_config`.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        site = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None
    base = path.parent.resolve()
    path_, workspace = _resolve(site.path, base, f"{path}: path"), _resolve(site.workspace, base, f"{path}: workspace")
    return site.model_copy(update={"path": path_, "workspace": workspace})
