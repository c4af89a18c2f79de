"""Where a federation's artifacts live in its tracking run (and a site's replies in its site run): the one module
that owns these paths. Writers and readers (the flow, the tracking adapter, the site pool and the site agent) all
ask here."""

from __future__ import annotations

CONFIG = "federation/config.json"
"""The validated run config (names and paths only): ``molfed resume`` rebuilds the run from it; sites fetch it."""
PLAN = "federation/plan.json"
"""Sites mode: model spec and target scaling every site builds the model from."""
SAMPLED = "federation/sampled_partners.json"
"""Partners asked in each round."""
RESULTS = "results.json"
HETEROGENEITY = "heterogeneity.json"
FAIRNESS = "fairness.json"
CONTRIBUTIONS = "contributions.json"


def global_weights(server_round: int) -> str:
    """The global weights after ``server_round`` (0: the initial weights), loadable with ``weights_only=True``."""
    return f"global_model/round_{server_round:04d}.pt"


def checkpoint(server_round: int) -> str:
    """The coordinator's checkpoint after ``server_round`` (:mod:`molfed.federated.checkpoint`)."""
    return f"checkpoint/round_{server_round:04d}.npz"


def site_reply(action: str, server_round: int = 0) -> str:
    """A site job's JSON reply, in the partner's ``site-<name>`` run."""
    return f"replies/{action}-{server_round:04d}.json"


def site_update(server_round: int) -> str:
    """A site's signed model update of ``server_round``, in its ``site-<name>`` run."""
    return f"replies/update-{server_round:04d}.pt"


def calibration_payload(step: str) -> str:
    """Sites mode: what the coordinator sends with calibration ``step`` (the embedding domain for ``scores``, the
    calibration for ``measure``), on the federation run; sites check it against the digest their request signed."""
    return f"federation/calibration/{step}.json"


def calibration_reply(step: str, server_round: int) -> str:
    """A site's reply to calibration ``step`` of the model kept at ``server_round``, in its ``site-<name>`` run."""
    return site_reply(f"calibrate-{step}", server_round)


def secagg_reply(action: str, server_round: int, calibration: str | None = None) -> str:
    """A site's reply to secure-aggregation step ``action`` of a training round, or of calibration step
    ``calibration``'s secure sum (round 0), in its ``site-<name>`` run."""
    return site_reply(action if calibration is None else f"calibrate-{calibration}-{action}", server_round)
