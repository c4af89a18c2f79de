"""A partner's own site config (kept at the partner; the coordinator never sees it) and the run config a site derives
from the coordinator's."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from molfed.config.base import Name
from molfed.config.loading import _format_errors, _read_yaml, _resolve
from molfed.config.rules import _public_key_problem
from molfed.config.schema import DaskConfig, PartnerConfig, RunConfig, _PrivateTasks
from molfed.errors import ConfigError
from molfed.site.policy import SitePolicy


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
    # the federation's calibration setting, resolved for its mode (this view is local mode, whose default differs):
    # the site carves the calibration hold-out from training exactly when the federation calibrates
    raw["calibration"]["enabled"] = config.calibration.active(config.mode)
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
