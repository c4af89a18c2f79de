"""A site's own policy (default deny): which jobs, for which federations, under which protections.

The policy lives in the partner's site config, which the coordinator never sees. It is checked twice: on the signed
request (job kind, federation name, size) before anything of the site is read, and on the federation config the job
downloads (bound by digest to the signed request) before the library is opened: rounds, epochs, the tasks whose heads
may leave, secure aggregation, update signing and a differential-privacy budget whose spending the site keeps itself
(:class:`EpsilonLedger`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from molfed.site.jobs import PARTNER_JOBS, SECAGG_STEPS, PartnerAction, SecAggAction
from molfed.site.requests import RequestRefused

if TYPE_CHECKING:
    from molfed.config import RunConfig

JobKind = Literal[PartnerAction, SecAggAction]
OPT_IN: tuple[JobKind, ...] = ("calibrate",)
"""Job kinds a site accepts only when its policy lists them: each sends something the others do not (``calibrate``:
sums of the model's embeddings of the site's training molecules and score histograms of its calibration split)."""
DEFAULT_JOBS: tuple[JobKind, ...] = tuple(k for k in (*PARTNER_JOBS, *SECAGG_STEPS) if k not in OPT_IN)


class SitePolicy(BaseModel):
    """What this site agrees to do. Anything not allowed here is refused and written to the site's audit log."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    federations: list[str] = Field(
        default_factory=list,
        description="Federation names (the coordinator config's `name`) this site serves. Empty: none, and the "
        "agent refuses to start.",
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="Shared tasks whose heads this site may train and send. A federation with another shared task "
        "is refused. Empty: none, and the agent refuses to start.",
    )
    jobs: list[JobKind] = Field(
        default_factory=lambda: list(DEFAULT_JOBS),
        description="Job kinds accepted (molfed's own code, installed at this site). Default: prepare, round, finish "
        "and the secure-aggregation steps share_keys, mask, reveal. 'calibrate' (the kept model's conformal "
        "calibration and applicability domain: embedding moments, score histograms, coverage counts leave the site, "
        "as a secure sum under secure aggregation) is accepted only when listed here.",
    )
    require_secure_aggregation: bool = Field(
        False, description="Refuse federations that do not mask updates (the coordinator then sees only their sum)."
    )
    require_signing: bool = Field(False, description="Refuse federations whose coordinator does not check signatures.")
    max_epsilon: float | None = Field(
        None,
        gt=0.0,
        description="Refuse a round that would take this site's epsilon (sample-level DP, all federations together, "
        "accounted at the site) above this; also refuses federations without privacy.mode 'sample'. None: no DP "
        "requirement.",
    )
    max_rounds: int = Field(1000, ge=1, description="Refuse federations configured with more rounds.")
    max_epochs: int = Field(100, ge=1, description="Refuse federations with more local epochs per round.")
    allow_local_only: bool = Field(
        True, description="Train the local-only baseline on request (its test metrics leave the site)."
    )
    max_request_bytes: int = Field(
        1_000_000, ge=1_000, le=100_000_000, description="Refuse requests whose parameters are larger (JSON bytes)."
    )
    max_request_lifetime_s: float = Field(
        86_400.0, gt=0.0, description="Refuse signed requests valid for longer than this (seconds)."
    )


def check_request(policy: SitePolicy, *, action: str, federation: str, calibration: bool = False) -> None:
    """The request-level rules (nothing of the site read yet); ``calibration``: a secure-aggregation step of a
    calibration's secure sum, allowed only where ``calibrate`` is.

    Raises
    ------
    RequestRefused
    """
    for kind in (action, "calibrate") if calibration else (action,):
        if kind not in policy.jobs:
            raise RequestRefused(f"policy: job kind {kind!r} is not allowed at this site (allowed: {policy.jobs})")
    if federation not in policy.federations:
        raise RequestRefused(f"policy: federation {federation!r} is not one this site serves")


def check_federation(policy: SitePolicy, config: RunConfig, *, federation: str, local_only: bool = False) -> None:
    """The rules on the federation's real settings (the config the request bound by digest).

    Raises
    ------
    RequestRefused
    """
    if config.name != federation:
        raise RequestRefused(f"policy: the config names federation {config.name!r}, the request {federation!r}")
    if config.mode != "sites":
        raise RequestRefused(f"policy: the federation runs in mode {config.mode!r}, expected 'sites'")
    extra = sorted({t.name for t in config.tasks} - set(policy.tasks))
    if extra:
        raise RequestRefused(f"policy: shared task(s) {extra} may not leave this site (allowed: {policy.tasks})")
    if config.federation.rounds > policy.max_rounds:
        raise RequestRefused(f"policy: {config.federation.rounds} rounds, at most {policy.max_rounds} allowed")
    if config.train.epochs > policy.max_epochs:
        raise RequestRefused(f"policy: {config.train.epochs} local epochs, at most {policy.max_epochs} allowed")
    if policy.require_secure_aggregation and not config.secure_aggregation.enabled:
        raise RequestRefused("policy: this site requires secure aggregation; the federation has it off")
    if policy.require_signing and not config.integrity.signing:
        raise RequestRefused("policy: this site requires signed updates; the federation has integrity.signing off")
    if policy.max_epsilon is not None and config.privacy.mode != "sample":
        raise RequestRefused(
            f"policy: this site requires sample-level DP (epsilon <= {policy.max_epsilon:g}); the federation has "
            f"privacy.mode {config.privacy.mode!r}"
        )
    if local_only and not policy.allow_local_only:
        raise RequestRefused("policy: this site does not train the local-only baseline")


class EpsilonLedger:
    """The epsilon this site spent, over every federation and round it trained under DP, kept in its workspace."""

    SUBJECT = "site"

    def __init__(self, path: Path, delta: float):
        from molfed.privacy.accountant import PrivacyLedger  # the accountant's numerics only where DP is asked for

        self.path = path
        self.ledger = PrivacyLedger(delta)
        if path.exists():
            state = json.loads(path.read_text(encoding="utf-8"))
            if float(state["delta"]) != float(delta):  # another delta: account under the stricter of the two
                delta = min(delta, float(state["delta"]))
                self.ledger = PrivacyLedger(delta)
            self.ledger.load_state_dict({**state, "delta": delta})

    def charge(self, config: RunConfig, *, n_train: int, budget: float, server_round: int) -> float:
        """Spend one round of ``config``'s DP-SGD on ``n_train`` molecules; return the new epsilon.

        Raises
        ------
        RequestRefused
            Before anything is spent, if the round would take the site above ``budget``.
        """
        from molfed.federated.dp_budget import round_costs

        (cost,) = round_costs(
            "sample",
            noise_multiplier=config.privacy.noise_multiplier,
            n_train={self.SUBJECT: n_train},
            batch_size=config.train.batch_size,
            epochs=config.train.epochs,
        )
        noise, rate, steps = cost.noise_multiplier, cost.sample_rate, cost.steps
        after = self.ledger.epsilon_if(self.SUBJECT, noise_multiplier=noise, sample_rate=rate, steps=steps)
        if after > budget:
            raise RequestRefused(
                f"policy: round {server_round} would raise this site's epsilon from "
                f"{self.ledger.epsilon(self.SUBJECT):.3g} to {after:.3g} > max_epsilon {budget:g}"
            )
        self.ledger.spend(self.SUBJECT, noise_multiplier=noise, sample_rate=rate, steps=steps)
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.ledger.state_dict()), encoding="utf-8")
        os.replace(tmp, self.path)
        return after
