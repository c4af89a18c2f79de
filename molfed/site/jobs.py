"""What a coordinator may ask of a site: the job kinds and their parameters, validated as untrusted input.

Parameters are ids, numbers and protocol messages, never data. Unknown fields, paths in place of ids and oversized
lists are refused (``extra="forbid"``, patterns, bounds); the seal (signature) is checked before these models see
the job (:mod:`molfed.site.requests`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from molfed.site.requests import RequestRefused

PartnerAction = Literal["prepare", "round", "finish", "calibrate"]
SecAggAction = Literal["share_keys", "mask", "reveal"]
CalibrationStep = Literal["moments", "scores", "measure"]
"""The partner's calibration steps (:data:`molfed.federated.calibration.STEPS`)."""
SummedStep = Literal["moments", "scores"]
"""Calibration steps whose sums go through a secure sum under secure aggregation."""
PARTNER_JOBS: tuple[PartnerAction, ...] = get_args(PartnerAction)
SECAGG_STEPS: tuple[SecAggAction, ...] = get_args(SecAggAction)
CALIBRATION_STEPS: tuple[CalibrationStep, ...] = get_args(CalibrationStep)

RunId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
Round = Annotated[int, Field(ge=0, le=100_000)]
_Short = Annotated[str, Field(max_length=4096)]


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    partner: Name
    parent_run_id: RunId
    """The federation's MLflow run: its artifacts hold the config, the plan and the global weights."""
    site_run_id: RunId
    """This partner's ``site-<name>`` child run, where the reply goes."""
    server_round: Round = 0


class PartnerJob(_Job):
    """prepare, round, finish or calibrate: the partner's jobs on its own data."""

    action: PartnerAction
    options: dict[Annotated[str, Field(max_length=64)], float] = Field(default_factory=dict, max_length=32)
    parity_task: Annotated[int, Field(ge=0, le=10_000)] | None = None
    parity_edges: list[float] = Field(default_factory=list, max_length=1_000)
    champion_uri: Annotated[str, Field(pattern=r"^models:/[A-Za-z0-9_.@/-]{1,200}$")] | None = None
    state_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "default"
    local_only: bool = False
    step: CalibrationStep | None = None
    """``calibrate`` only: which step (the kept model's weights are those of ``server_round``)."""

    @model_validator(mode="after")
    def _step_with_calibrate(self) -> PartnerJob:
        if (self.action == "calibrate") != (self.step is not None):
            raise ValueError("a calibrate job names its step, other jobs none")
        return self

    @field_validator("champion_uri")
    @classmethod
    def _no_parent_segments(cls, value: str | None) -> str | None:
        if value is not None and ".." in value:
            raise ValueError("must name a registered model, without '..'")
        return value


class SecAggJob(_Job):
    """One secure-aggregation step: public keys, ciphertexts and names. Never data or weights."""

    action: SecAggAction
    roster: dict[Name, dict[Annotated[str, Field(max_length=32)], _Short | None]] = Field(
        default_factory=dict, max_length=10_000
    )
    inbox: list[dict[Annotated[str, Field(max_length=32)], _Short]] = Field(default_factory=list, max_length=10_000)
    survivors: list[Name] = Field(default_factory=list, max_length=10_000)
    calibration: SummedStep | None = None
    """The secure sum of this calibration step (None: the training round ``server_round``'s)."""


Job = PartnerJob | SecAggJob


def parse_job(raw: dict) -> Job:
    """The job model for ``raw['action']``.

    Raises
    ------
    RequestRefused
        ``malformed request: ...`` naming the first offending field (never its value).
    """
    action = raw.get("action")
    model: type[_Job] = PartnerJob if action in PARTNER_JOBS else SecAggJob
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _where(err["loc"])
        raise RequestRefused(f"malformed request: {where}: {err['msg']} ({exc.error_count()} problem(s))") from None


_FIELDS = set(PartnerJob.model_fields) | set(SecAggJob.model_fields)
_SHOWN = re.compile(r"[A-Za-z0-9_]{1,24}")
"""Mapping keys short and plain enough to name in a refusal (``options.lr``, ``inbox.0.ciphertext``)."""


def _where(loc: tuple) -> str:
    """The error's location with requester-chosen keys (mapping keys, unknown field names) cut or masked: a
    refusal goes to the audit log and the flow run and must not echo what was sent."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(str(part))
        elif i == 0:
            parts.append(part if part in _FIELDS else str(part)[:32])
        elif part != "[key]":
            parts.append(part if _SHOWN.fullmatch(str(part)) else "<key>")
    return ".".join(parts) or "<job>"
