"""What a federation run reports about itself: tags, counts, curves and the final comparison. Aggregates only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version

from molfed.federated.partner import PartnerSummary


def version_tags() -> dict[str, str]:
    """Versions of molfed and the stack, as MLflow tags."""
    names = {
        "molfed": "molfed",
        "rdkit": "rdkit",
        "torch": "torch",
        "torch_geometric": "torch-geometric",
        "prefect": "prefect",
        "mlflow": "mlflow",
    }
    tags = {}
    for key, dist in names.items():
        try:
            tags[f"molfed.version.{key}"] = version(dist)
        except Exception:  # not installed as a distribution (e.g. a source checkout)
            tags[f"molfed.version.{key}"] = "unknown"
    return tags


def partner_tags(summaries: Sequence[PartnerSummary]) -> dict[str, str]:
    """Per partner: library digest, molecule counts and reject counts. No structures, no paths."""
    tags: dict[str, str] = {}
    for s in summaries:
        prefix = f"partner.{s.name}"
        tags[f"{prefix}.library_digest"] = s.digest
        tags[f"{prefix}.molecules"] = str(s.n_molecules)
        tags[f"{prefix}.input_rows"] = str(s.n_input_rows)
        tags[f"{prefix}.split"] = f"{s.n_train}/{s.n_val}/{s.n_test}"
        tags[f"{prefix}.duplicates_merged"] = str(s.n_duplicates_merged)
        tags[f"{prefix}.rejects"] = str(sum(s.reject_counts.values()))
    return tags


def partner_count_metrics(summaries: Sequence[PartnerSummary]) -> dict[str, float]:
    """Counts as metrics so they can be charted and compared: ``molecules.<p>``, ``rejects.<reason>.<p>``."""
    out: dict[str, float] = {}
    for s in summaries:
        out[f"molecules.{s.name}"] = float(s.n_molecules)
        out[f"rejects.{s.name}"] = float(sum(s.reject_counts.values()))
        for reason, count in s.reject_counts.items():
            out[f"rejects.{reason}.{s.name}"] = float(count)
    return out


def curves_from_history(
    federated: Sequence[Mapping[str, Mapping[str, float]]],
    local_only: Mapping[str, Sequence[Mapping[str, float]]],
    pooled: Sequence[Mapping[str, Mapping[str, float]]],
    metric: str,
) -> dict[str, dict[str, list[float]]]:
    """``{partner: {kind: [metric per round]}}`` from per-round validation metrics of each model kind."""
    partners = list(federated[0]) if federated else list(local_only)
    curves: dict[str, dict[str, list[float]]] = {}
    for name in partners:
        kinds = {"federated": [r[name].get(metric, float("nan")) for r in federated]}
        if name in local_only:
            kinds["local-only"] = [r.get(metric, float("nan")) for r in local_only[name]]
        if pooled:
            kinds["pooled"] = [r[name].get(metric, float("nan")) for r in pooled]
        curves[name] = kinds
    return curves


def results_markdown(rows: Sequence[Mapping[str, object]], metric: str, kinds: Sequence[str]) -> str:
    """A Markdown table of the per-partner comparison on each partner's test split."""
    head = f"| partner | {' | '.join(kinds)} |\n|---|{'---|' * len(kinds)}\n"
    body = ""
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else "–" for v in (row.get(k) for k in kinds)]
        body += f"| {row['partner']} | {' | '.join(cells)} |\n"
    return f"Test {metric} per partner (scaffold split)\n\n{head}{body}"
