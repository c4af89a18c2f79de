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
