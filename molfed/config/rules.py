"""Rules of a run config that span several keys (called by :class:`~molfed.config.schema.RunConfig`'s validator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from molfed.config.base import RESERVED_PARTNER_NAMES
from molfed.federated.capabilities import caps

if TYPE_CHECKING:
    from molfed.config.schema import FederationConfig, PartnerConfig, RunConfig


def check_run(config: RunConfig) -> None:
    """Every rule of a run config that spans keys (partners vs tasks, mode, privacy, sampling, integrity).

    Raises
    ------
    ValueError
        Naming the config key (pydantic adds the source).
    """
    _no_duplicates([p.name for p in config.partners], "partner name")
    _no_duplicates([t.name for t in config.tasks], "task name")
    for i, partner in enumerate(config.partners):
        _check_partner_tasks(partner, [t.name for t in config.tasks], f"partners.{i}.")
        if config.mode == "sites" and partner.declares_tasks:
            raise ValueError(
                f"partners.{i}: sites mode: shared_tasks, private_tasks, report_private_metrics and "
                "export_tracking_uri belong in the partner's own site config, which the coordinator never sees"
            )
        if partner.export_tracking_uri and partner.export_tracking_uri == config.tracking.tracking_uri:
            raise ValueError(
                f"partners.{i}.export_tracking_uri: is the federation's tracking URI; a partner's own model "
                "(with its private head) must go to the partner's own MLflow"
            )
        if config.privacy.mode == "client" and partner.shared_tasks == []:
            raise ValueError(
                f"partners.{i}.shared_tasks: privacy.mode 'client' needs every partner's update to carry the "
                f"shared head, but partner {partner.name!r} has no shared task"
            )
        if partner.shared_tasks == [] and (config.secure_aggregation.enabled or config.integrity.screens):
            raise ValueError(
                f"partners.{i}.shared_tasks: partner {partner.name!r} sends the trunk only, but secure aggregation "
                "and integrity delta screens need every update to carry the same tensors; give it a shared task "
                "or turn them off"
            )
        if partner.private_tasks and config.baselines.pooled:
            raise ValueError(
                f"baselines.pooled: partner {partner.name!r} has private tasks, whose labels never leave it; "
                "set baselines.pooled false"
            )
    for partner in config.partners:
        if config.mode == "local" and partner.path is None:
            raise ValueError(f"partner {partner.name!r}: path is required in local mode")
        if config.mode == "sites" and (partner.path is not None or partner.workspace is not None or partner.dask):
            raise ValueError(
                f"partner {partner.name!r}: sites mode takes partner names only; the path, workspace and "
                "dask settings belong in the partner's own site config"
            )
    if config.mode == "sites" and not caps(config.federation.strategy).sites:
        raise ValueError(
            f"federation.strategy: {config.federation.strategy!r} sends control variates to partners, which sites "
            "mode does not carry yet; choose another strategy or local mode"
        )
    if config.mode == "sites" and config.baselines.pooled:
        raise ValueError("baselines.pooled needs every partner's data in one place; set it false in sites mode")
    if config.mode == "sites" and config.baselines.fine_tune_epochs:
        raise ValueError(
            "baselines.fine_tune_epochs: site agents do not run a fine-tuning job yet; set it to 0 in sites mode"
        )
    _check_privacy(config.privacy.mode, config.federation.strategy)
    _check_sampling(config.federation, len(config.partners))
    for partner in config.partners:
        if partner.name in RESERVED_PARTNER_NAMES:
            raise ValueError(
                f"partner name {partner.name!r} is reserved (metrics such as test_rmse.{partner.name} "
                "summarize all partners); choose another"
            )
    _check_task_names(config)
    _check_integrity(config)


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
