"""The jobs a site agent accepted, run in its own long-lived process with the site's data kept loaded.

Only molfed's own job code, installed at the site, runs here; which one follows from the validated job's
``action``, never from anything a deployment names. Everything a job fetches from the federation run (config, plan,
weights, the champion, a calibration step's payload) is checked against the digest the coordinator signed into the
request, and the site's policy is checked on the real federation config before the library is opened.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from molfed import layout
from molfed.config import RunConfig, SiteConfig, site_run_config
from molfed.federated import calibration, jobs, keys
from molfed.federated import calibration_wire as cal_wire
from molfed.federated.partner import PartnerData
from molfed.federated.secure import site as secagg
from molfed.federated.secure import wire
from molfed.federated.weights import weights_digest
from molfed.models.model import ModelSpec
from molfed.site.jobs import Job, PartnerJob, SecAggJob
from molfed.site.policy import EpsilonLedger, check_federation
from molfed.site.requests import RequestRefused, Verified, check_binding, json_digest
from molfed.site_artifacts import Artifacts
from molfed.tracking import Tracker, load_model_parts, resolve_tracking_uri
from tasks import integrity
from tasks.partner import finish_from_config, load_partner, local_only_from_config, round_from_config


class WarmSite:
    """Runs accepted jobs for ``site``; keeps the MLflow client and the prepared partner data between jobs."""

    def __init__(self, site: SiteConfig):
        self.site = site
        self._tracker: Tracker | None = None
        self._artifacts: Artifacts | None = None
        self._data: dict[str, PartnerData] = {}
        """Prepared data by the digest of the federation config it was prepared for."""
        self._signed: dict[str, Any] = {}
        """JSON artifacts already fetched and checked, by their signed digest (a federation's config and plan are
        the same for every job: fetched once, not once per round)."""
        self.ledger = None
        if site.policy.max_epsilon is not None:
            self.ledger = EpsilonLedger(site.workspace / "agent" / "epsilon.json", delta=1e-5)

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(resolve_tracking_uri(None), None)
        return self._tracker

    @property
    def artifacts(self) -> Artifacts:
        """Replies and weights, one request per file (:mod:`molfed.site_artifacts`)."""
        if self._artifacts is None:
            self._artifacts = Artifacts(resolve_tracking_uri(None))
        return self._artifacts

    def run(self, job: Job, request: Verified) -> None:
        """Run ``job``, upload its reply to the partner's site run.

        Raises
        ------
        RequestRefused
            If a download differs from what was signed, or the federation's settings break the site's policy.
        """
        if isinstance(job, SecAggJob):
            steps = self._secagg(job)
            path = layout.secagg_reply(job.action, job.server_round, job.calibration)
            self.artifacts.put_json(job.site_run_id, path, steps)
            return
        federation, digest = self._federation(job, request)
        config = site_run_config(federation, self.site)
        inputs = self._calibration_inputs(job, request, federation) if job.action == "calibrate" else None
        if digest not in self._data:
            self._data = {digest: load_partner(config, config.partners[0])}  # one federation's data kept warm
        data = self._data[digest]
        reply: dict[str, Any]
        if job.action == "prepare":
            prepared = jobs.prepare(data)
            reply = {"summary": asdict(prepared.summary), "moments": prepared.moments}
        elif job.action == "round":
            reply = self._round(job, request, federation, config, data)
        elif job.action == "calibrate":
            assert inputs is not None and job.step is not None
            reply = self._calibrate(job, federation, config, data, *inputs)
            self.artifacts.put_json(job.site_run_id, layout.calibration_reply(job.step, job.server_round), reply)
            return
        else:
            reply = self._finish(job, request, config, data)
        self.artifacts.put_json(job.site_run_id, layout.site_reply(job.action, job.server_round), reply)

    def _signed_json(self, job: PartnerJob, request: Verified, path: str, name: str) -> Any:
        """The JSON artifact ``path`` of the federation run, checked against the digest the request bound ``name``
        to (from this process's cache when an earlier job fetched and checked the same digest)."""
        signed = request.bindings.get(name)
        if signed in self._signed:
            return self._signed[signed]
        obj = self.artifacts.get_json(job.parent_run_id, path)
        check_binding(request.bindings, name, json_digest(obj))
        if len(self._signed) >= 16:  # a few federations' config and plan
            self._signed.clear()
        self._signed[request.bindings[name]] = obj
        return obj

    def _federation(self, job: PartnerJob, request: Verified) -> tuple[RunConfig, str]:
        raw = self._signed_json(job, request, layout.CONFIG, "config")
        digest = request.bindings["config"]
        try:
            federation = RunConfig.model_validate(raw)
        except ValidationError as exc:
            raise RequestRefused(f"malformed federation config ({exc.error_count()} problem(s))") from None
        check_federation(self.site.policy, federation, federation=request.federation, local_only=job.local_only)
        return federation, digest

    def _plan(self, job: PartnerJob, request: Verified) -> tuple[ModelSpec, dict]:
        plan = self._signed_json(job, request, layout.PLAN, "plan")
        return ModelSpec.from_dict(plan["spec"]), plan["scaling"]

    def _weights(self, job: PartnerJob, request: Verified, server_round: int, name: str) -> dict:
        weights = self.artifacts.get_weights(job.parent_run_id, layout.global_weights(server_round))
        check_binding(request.bindings, name, weights_digest(weights))
        return weights

    def _round(
        self, job: PartnerJob, request: Verified, federation: RunConfig, config: RunConfig, data: PartnerData
    ) -> dict[str, Any]:
        spec, scaling = self._plan(job, request)
        weights = self._weights(job, request, job.server_round - 1, "weights")
        if self.ledger is not None:  # policy.max_epsilon: the site's own account, before anything is trained
            assert self.site.policy.max_epsilon is not None
            self.ledger.charge(
                federation,
                n_train=data.summary.n_train,
                budget=self.site.policy.max_epsilon,
                server_round=job.server_round,
            )
        out = round_from_config(
            config,
            data,
            spec,
            weights,
            scaling,
            job.server_round,
            job.options,
            None,
            job.state_key,
            val_as_sums=federation.secure_aggregation.enabled,  # the site's view of the config has it off
        )
        at = {"run_id": job.parent_run_id, "server_round": job.server_round}
        advert = None
        if federation.secure_aggregation.enabled:  # the update stays here; its round keys travel instead
            out, advert = integrity.hold_at_site(federation, config, out, **at)
        else:
            out = integrity.seal(config, job.partner, out, **at)
            self.artifacts.put_weights(job.site_run_id, layout.site_update(job.server_round), out.update.weights)
        return {
            "n_samples": out.update.n_samples,
            "metrics": dict(out.update.metrics),
            "incoming_val": out.incoming_val,
            "signature": integrity.signature_json(out.update),
            "advert": advert,
        }

    def _finish(self, job: PartnerJob, request: Verified, config: RunConfig, data: PartnerData) -> dict[str, Any]:
        secagg.forget(self.site.workspace, job.parent_run_id)  # what a round this partner dropped out of left
        spec, scaling = self._plan(job, request)
        weights = self._weights(job, request, job.server_round, "weights")
        champion = None
        if job.champion_uri:
            c_spec, c_weights, c_scaling = load_model_parts(job.champion_uri, self.tracker.tracking_uri)
            check_binding(request.bindings, "champion", weights_digest(c_weights))
            champion = (c_spec, c_weights, c_scaling)
        reply = finish_from_config(
            config, self.site.name, spec, weights, scaling, job.parity_task, job.parity_edges, champion, job.state_key
        ).to_json()
        if job.local_only:
            init = self._weights(job, request, 0, "init")
            test, curve = local_only_from_config(config, data, spec, init, scaling)
            reply["local_only"] = {"test": test, "curve": curve}
        return reply

    def _calibration_inputs(
        self, job: PartnerJob, request: Verified, federation: RunConfig
    ) -> tuple[ModelSpec, dict, dict, dict[str, Any]]:
        """A calibrate job's plan, the kept round's global weights and the step's payload, each checked against the
        digest the request signed, before the library is opened.

        Raises
        ------
        RequestRefused
            If the federation does not calibrate, a download differs from what was signed, or the payload is
            malformed."""
        assert job.step is not None
        if not federation.calibration.active(federation.mode):
            raise RequestRefused("calibrate: the federation's config does not calibrate (calibration.enabled)")
        spec, scaling = self._plan(job, request)
        weights = self._weights(job, request, job.server_round, "weights")
        payload: dict[str, Any] = {}
        if job.step != "moments":
            raw = self._signed_json(job, request, layout.calibration_payload(job.step), "payload")
            try:
                payload = cal_wire.payload_from_json(job.step, raw, width=spec.hidden_channels)
            except ValueError as exc:
                raise RequestRefused(str(exc)) from None
        return spec, scaling, weights, payload

    def _calibrate(
        self,
        job: PartnerJob,
        federation: RunConfig,
        config: RunConfig,
        data: PartnerData,
        spec: ModelSpec,
        scaling: dict,
        weights: dict,
        payload: dict[str, Any],
    ) -> dict[str, Any]:
        """One calibration step on this site's data (:func:`molfed.federated.calibration.run_step`). The reply holds
        sums and counts only; under secure aggregation the sums of ``moments`` and ``scores`` stay here for the
        secure sum and their round keys go instead. ``mondrian``: this site's own calibration stays in its
        workspace."""
        step = job.step
        assert step is not None
        if step == "measure":  # what a secure sum this site dropped out of left behind
            for summed in ("moments", "scores"):
                secagg.forget(self.site.workspace, calibration.secure_key(job.parent_run_id, summed))
        out = calibration.run_step(
            data,
            step,
            spec=spec,
            weights=weights,
            scaling=scaling,
            payload=payload,
            device=config.device,
            state_key=job.state_key,
        )
        if federation.secure_aggregation.enabled and step != "measure":
            key = calibration.secure_key(job.parent_run_id, step)
            return {"advert": integrity.hold_sums_at_site(federation, config, job.partner, out, run_id=key)}
        return cal_wire.reply_to_json(step, out)

    def _secagg(self, job: SecAggJob) -> dict[str, Any]:
        workspace, run_id, server_round = self.site.workspace, job.parent_run_id, job.server_round
        if job.calibration is not None:  # a calibration step's secure sum: its own keys and state
            run_id = calibration.secure_key(run_id, job.calibration)
        if job.action == "share_keys":
            roster = {n: wire.advert_from_json(a) for n, a in job.roster.items()}
            shares = secagg.share_keys(workspace, roster, run_id=run_id, server_round=server_round)
            return {"shares": [wire.share_to_json(s) for s in shares]}
        if job.action == "mask":
            inbox = [wire.share_from_json(s) for s in job.inbox]
            masked, signature = secagg.mask(
                workspace,
                inbox,
                load_key=lambda: keys.load_signing_key(workspace),
                run_id=run_id,
                server_round=server_round,
            )
            return {"masked": wire.masked_to_json(masked, signature)}
        reveal = secagg.reveal(workspace, job.survivors, run_id=run_id, server_round=server_round)
        return {"reveal": wire.reveal_to_json(reveal)}


def torch_threads(threads: int | None = None) -> None:
    """A site's jobs run one at a time: let torch use the machine's cores (or ``threads``)."""
    import torch

    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))
