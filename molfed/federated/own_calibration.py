"""A partner's own calibration of its own model (the federated trunk + its private head), computed at the partner.

The federation calibrates the model it registers from every partner's sums (:mod:`molfed.federated.calibration`);
a partner's exported model (:func:`molfed.federated.jobs.export_private_model`) predicts tasks the federation never
sees, with a head nobody else holds, so it gets its own calibration, from the partner's data alone: split-conformal
quantiles of its calibration split's scores per task (shared and private) and level, temperatures and
class-conditional sets for classification, and an applicability domain from the moments of its own training
embeddings under that model. The same building blocks as the federated path (:func:`conformal.score_sums`,
:func:`conformal.build_calibration`, :func:`conformal.embedding_stats`), fed one partner's arrays instead of the
federation's sums; nothing of it leaves the partner.

It is Mondrian calibration by partner (``method: "mondrian"`` in the calibration): its guarantee is marginal
coverage over molecules exchangeable with this partner's own calibration molecules, not over the federation's mix.
A task with too few calibration labels for a level gets an unbounded interval there (both classes in the set), as
everywhere in :mod:`~molfed.federated.conformal`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from molfed.federated import conformal as cf
from molfed.federated import partner as p
from molfed.federated.calibration import calibration_graphs, domain_from_moments, embedding_moments, outputs
from molfed.models.model import MoleculeModel

log = logging.getLogger(__name__)


def label_columns(data: p.PartnerData, n_tasks: int) -> list[int]:
    """The columns of the partner's ``y`` its own ``n_tasks``-task model predicts, in the model's task order: shared
    (if it keeps them), then private."""
    if data.layout is None:
        return list(range(n_tasks))
    return data.layout.shared_columns + data.layout.private_columns


def own_calibration(
    model: MoleculeModel, data: p.PartnerData, *, levels: Sequence[float], domain_level: float
) -> cf.Calibration:
    """Calibrate ``model`` (the partner's own, every task it predicts) on ``data``'s calibration split
    (:func:`~molfed.federated.calibration.calibration_graphs`), its domain on ``data``'s training split.

    Missing labels are left out task by task; a task with fewer than ``1/(1 - level) - 1`` calibration labels is
    unbounded at that level. With fewer than two training molecules there is no domain (``domain`` None, logged).
    """
    spec = model.spec
    _, _, _, h_train = outputs(model, data.splits["train"])
    domain: cf.EmbeddingStats | None = None
    try:
        domain = domain_from_moments(embedding_moments(h_train))
    except ValueError:
        log.warning("partner %s: too few training molecules for an applicability domain of its model", data.name)
    y, raw, pred, h = outputs(model, calibration_graphs(data))
    sums = cf.score_sums(
        y[:, label_columns(data, len(spec.task_names))],
        raw,
        pred,
        task_names=spec.task_names,
        task_types=spec.task_types,
        std=model.target_std.cpu().tolist(),
        domain=None if domain is None else cf.domain_scores(h, domain),
    )
    calibration = cf.build_calibration(
        sums,
        task_names=spec.task_names,
        task_types=spec.task_types,
        std=model.target_std.cpu().tolist(),
        levels=levels,
        method="mondrian",
        domain=domain,
        domain_level=domain_level,
    )
    log.info("partner %s: calibrated its own model (%d tasks)", data.name, len(calibration.tasks))
    return calibration
