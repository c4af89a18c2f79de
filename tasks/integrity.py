"""Update integrity in the flow: the partner seals its reply (:func:`seal`), the coordinator guards the strategy
(:func:`guard`). Both read the run config's ``integrity`` and ``secure_aggregation`` sections; with both off they
return their input unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from molfed.config import RunConfig
from molfed.federated import integrity, jobs, keys
from molfed.federated.sealing import seal_update
from molfed.federated.secure import default_threshold
from molfed.federated.secure.local import LocalTransport
from molfed.federated.secure.rounds import Transport
from molfed.federated.signing import SignedUpdate, signature_to_json
from molfed.federated.strategies import Strategy
from molfed.federated.types import Update
from molfed.tracking import Tracker
from tasks.secagg_sites import SiteTransport


def seal(config: RunConfig, name: str, reply: jobs.RoundReply, *, run_id: str, server_round: int) -> jobs.RoundReply:
    """Partner side, right after its round job: sign the update, or hold it back for secure aggregation."""
    signing, secure = config.integrity.signing, config.secure_aggregation.enabled
    if not (signing or secure):
        return reply
    key = _signing_key(config, name) if signing and not secure else None
    update = seal_update(reply.update, run_id=run_id, server_round=server_round, signing_key=key, secure=secure)
    return dataclasses.replace(reply, update=update)


def signature_json(update: Update) -> dict[str, str | int] | None:
    """The update's signature as JSON (sites mode replies), None if unsigned."""
    if isinstance(update, SignedUpdate) and update.signature is not None:
        return signature_to_json(update.signature)
    return None


def public_keys(config: RunConfig) -> dict[str, str]:
    """Partner -> public key: from the config; in local mode a missing one is the workspace's (generated if absent,
    a simulation shortcut: in a real deployment the keys come from the config)."""
    found = dict(config.integrity.public_keys)
    if config.mode == "local":
        for p in config.partners:
            if p.name not in found:
                found[p.name] = keys.ensure_keypair(config.workspace_for(p))
    return found


def guard(strategy: Strategy, config: RunConfig, tracker: Tracker, run_id: str) -> Strategy:
    """``strategy`` behind the configured signature checks, delta screens and secure aggregation; each round's
    counts go to MLflow (metrics ``updates_received``, ``updates_rejected``, ``delta_norm.<partner>``; tag
    ``molfed.integrity.round.<r>``)."""
    i, s = config.integrity, config.secure_aggregation
    if not (i.signing or i.screens or s.enabled):
        return strategy
    keys_by_name = public_keys(config) if i.signing else None
    screens = None
    if i.screens:
        screens = integrity.Screens(i.max_delta_norm, i.max_norm_ratio, i.min_cosine, i.min_reference)
    secure = None
    if s.enabled:
        transport: Transport
        if config.mode == "sites":  # each partner's steps run at its site; it signs with its own key there
            transport = SiteTransport(run_id)
        else:
            loader = functools.partial(_signing_key, config) if i.signing else None
            transport = LocalTransport(signing_key=loader, peer_keys=keys_by_name, scale=2**s.scale_bits)
        threshold = secure_threshold(config)
        tasks = tuple((t.name, t.type) for t in config.tasks)  # validation sums ride in the masked updates
        secure = integrity.SecureSettings(transport, threshold, 2**s.scale_bits, tasks)

    def report(check: integrity.RoundCheck) -> None:
        tracker.log_metrics(run_id, check.metrics(), step=check.server_round)
        summary = f"received {check.received}, plaintext {check.plaintext}, rejected {len(check.rejected)}"
        if keys_by_name is not None:
            summary += f", signatures verified {check.verified}"
        if secure is not None:
            summary += "; secure aggregation: the coordinator saw masked vectors and their sum only"
        tracker.set_tags(run_id, {f"molfed.integrity.round.{check.server_round}": summary})
        for f in check.rejected:
            tracker.set_tags(run_id, {f"round.{check.server_round}.rejected.{f.partner}": f.reason[:500]})

    return integrity.GuardedStrategy(
        strategy, run_id=run_id, public_keys=keys_by_name, screens=screens, secure=secure, on_round=report
    )


def secure_threshold(config: RunConfig) -> int:
    """The round's Shamir threshold: configured, else a strict majority of the federation's partners."""
    return config.secure_aggregation.threshold or default_threshold(len(config.partners))


def hold_at_site(
    federation: RunConfig, site_view: RunConfig, reply: jobs.RoundReply, *, run_id: str, server_round: int
) -> tuple[jobs.RoundReply, dict]:
    """Sites mode, end of a partner's round job under secure aggregation: keep the update in the partner's
    workspace and return the reply without weights plus this round's round keys (JSON, signed when partners sign).

    ``federation`` is the coordinator's config (partners, threshold, public keys), ``site_view`` the site's own
    view of it (:func:`molfed.config.site_run_config`: its workspace and signing key).
    """
    advert = _hold(federation, site_view, reply.update, run_id=run_id, server_round=server_round)
    u = reply.update
    kept_back = Update(u.partner, {}, u.n_samples, dict(u.metrics))
    return dataclasses.replace(reply, update=kept_back), advert


def hold_sums_at_site(
    federation: RunConfig, site_view: RunConfig, name: str, sums: Mapping[str, np.ndarray], *, run_id: str
) -> dict:
    """Sites mode, a calibration step under secure aggregation: keep ``sums`` in the partner's workspace for the
    secure sum of ``run_id`` (:func:`molfed.federated.secure.rounds.secure_vector_sum`: one update of weight 1,
    round 0) and return its round keys (JSON)."""
    return _hold(federation, site_view, Update(name, dict(sums), 1), run_id=run_id, server_round=0)


def _hold(federation: RunConfig, site_view: RunConfig, update: Update, *, run_id: str, server_round: int) -> dict:
    from molfed.federated.secure import site, wire

    workspace = site_view.workspace_for(site_view.partners[0])
    signing = federation.integrity.signing
    advert = site.hold(
        workspace,
        update,
        run_id=run_id,
        server_round=server_round,
        threshold=secure_threshold(federation),
        scale=2**federation.secure_aggregation.scale_bits,
        signing_key=keys.load_signing_key(workspace) if signing else None,
        peer_keys=dict(federation.integrity.public_keys) if signing else None,
    )
    return wire.advert_to_json(advert)


def _signing_key(config: RunConfig, name: str) -> Ed25519PrivateKey:
    partner = next(p for p in config.partners if p.name == name)
    workspace = config.workspace_for(partner)
    if config.mode == "local" and name not in config.integrity.public_keys:
        keys.ensure_keypair(workspace)
    return keys.load_signing_key(workspace)
