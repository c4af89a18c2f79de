"""Experiment configuration: pydantic models validated once, at the edge.

A YAML file is loaded with :func:`load_config`; the resulting :class:`RunConfig` is the single parameter of the
Prefect flow (Prefect renders it as a form). Below the flow, functions take explicit keyword arguments.

Relative partner paths and workspaces are resolved against the directory of the YAML file, so a config means the
same thing from any working directory.

The package, by job: :mod:`.base` (strictness, the name rule), :mod:`.schema` (the models and their per-field
checks), :mod:`.rules` (rules across keys), :mod:`.loading` (YAML, overrides, one-line errors, paths),
:mod:`.site` (a partner's own site config).
"""

from molfed.config.base import RESERVED_PARTNER_NAMES, check_name
from molfed.config.loading import apply_overrides, load_config, parse_config
from molfed.config.schema import (
    BaselineConfig,
    CalibrationConfig,
    ChampionConfig,
    DaskConfig,
    DataConfig,
    FederationConfig,
    IntegrityConfig,
    ModelConfig,
    PartnerConfig,
    PrivacyConfig,
    PrivateTaskSpec,
    RunConfig,
    ScheduleConfig,
    SecureAggregationConfig,
    StandardizeConfig,
    TaskSpec,
    TrackingConfig,
    TrainConfig,
)
from molfed.config.site import SiteConfig, load_site_config, site_run_config

__all__ = [
    "RESERVED_PARTNER_NAMES",
    "BaselineConfig",
    "CalibrationConfig",
    "ChampionConfig",
    "DaskConfig",
    "DataConfig",
    "FederationConfig",
    "IntegrityConfig",
    "ModelConfig",
    "PartnerConfig",
    "PrivacyConfig",
    "PrivateTaskSpec",
    "RunConfig",
    "ScheduleConfig",
    "SecureAggregationConfig",
    "SiteConfig",
    "StandardizeConfig",
    "TaskSpec",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "check_name",
    "load_config",
    "load_site_config",
    "parse_config",
    "site_run_config",
]
