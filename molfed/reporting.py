"""What a federation run reports about itself: tags, counts, curves and the final comparison. Aggregates only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version
from typing import Any

from molfed.data.labels import DISAGREEING
from molfed.federated.overlap import Overlap
from molfed.federated.partner import PartnerSummary
from molfed.federated.value import improvement


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
        tags[f"{prefix}.rejects"] = str(rejected(s.reject_counts))
        tags[f"{prefix}.disagreeing_duplicates"] = str(s.reject_counts.get(DISAGREEING, 0))
    return tags


def rejected(counts: Mapping[str, int]) -> int:
    """Rows rejected, from counts by reason (the ``disagreeing_duplicate`` notes are kept rows, not rejects)."""
    return sum(n for reason, n in counts.items() if reason != DISAGREEING)


def partner_count_metrics(summaries: Sequence[PartnerSummary]) -> dict[str, float]:
    """Counts as metrics so they can be charted and compared: ``molecules.<p>``, ``rejects.<reason>.<p>`` and
    ``disagreeing_duplicates.<p>`` (molecules whose merged regression labels disagree widely; kept)."""
    out: dict[str, float] = {}
    for s in summaries:
        out[f"molecules.{s.name}"] = float(s.n_molecules)
        out[f"rejects.{s.name}"] = float(rejected(s.reject_counts))
        out[f"disagreeing_duplicates.{s.name}"] = float(s.reject_counts.get(DISAGREEING, 0))
        for reason, count in s.reject_counts.items():
            if reason != DISAGREEING:
                out[f"rejects.{reason}.{s.name}"] = float(count)
    return out


def curves_from_history(
    federated: Sequence[Mapping[str, Mapping[str, float]]],
    local_only: Mapping[str, Sequence[Mapping[str, float]]],
    pooled: Sequence[Mapping[str, Mapping[str, float]]],
    metric: str,
) -> dict[str, dict[str, list[float]]]:
    """``{partner: {kind: [metric per round]}}`` from per-round validation metrics of each model kind."""
    nan = float("nan")
    partners = list(dict.fromkeys(n for r in federated for n in r)) if federated else list(local_only)
    curves: dict[str, dict[str, list[float]]] = {}
    for name in partners:  # a partner not sampled in a round has no value for it (NaN: a gap in the line)
        kinds = {"federated": [r.get(name, {}).get(metric, nan) for r in federated]}
        if name in local_only:
            kinds["local-only"] = [r.get(metric, nan) for r in local_only[name]]
        if pooled:
            kinds["pooled"] = [r.get(name, {}).get(metric, nan) for r in pooled]
        curves[name] = kinds
    return curves


def round_table(
    rows: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Mapping[str, float]]], metric: str
) -> list[dict[str, Any]]:
    """The per-round table of the report: round, partners asked, train loss, the global model's validation
    ``metric`` over all partners and per partner (``val_<metric>.<partner>``), numbers to 4 significant digits."""

    def short(value: Any) -> Any:
        return float(f"{value:.4g}") if isinstance(value, float) else value

    table = []
    for i, row in enumerate(rows):
        out = {k: short(v) for k, v in row.items() if k == "round" or k == "sampled" or not k.startswith("partners_")}
        per_partner = val[i] if i < len(val) else {}
        out.update({f"val_{metric}.{n}": short(m.get(metric)) for n, m in per_partner.items() if metric in m})
        table.append(out)
    return table


def _cell(value: object, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, float) else "–"


def results_markdown(
    rows: Sequence[Mapping[str, object]], metric: str, kinds: Sequence[str], unit: str | None = None
) -> str:
    """A Markdown table of the per-partner comparison on each partner's test split; with a local-only baseline,
    a last column gives federation's relative gain over training alone (+ = better off federated)."""
    gain = "federated" in kinds and "local-only" in kinds
    extra = ["gain vs local-only"] if gain else []
    head = f"| partner | {' | '.join([*kinds, *extra])} |\n|---|{'---|' * (len(kinds) + len(extra))}\n"
    body = ""
    for row in rows:
        cells = [_cell(row.get(k)) for k in kinds]
        if gain:
            fed, alone = row.get("federated"), row.get("local-only")
            value = improvement(
                fed if isinstance(fed, float) else None, alone if isinstance(alone, float) else None, metric
            )
            cells.append(_cell(value, "+.1%"))
        body += f"| {row['partner']} | {' | '.join(cells)} |\n"
    shown = f"{metric} ({unit})" if unit and metric in ("rmse", "mae") else metric
    all_rows = (
        "RMSE over the union of the test splits" if metric == "rmse" else "size-weighted mean of partners' values"
    )
    return f"Test {shown} per partner (scaffold split; all partners: {all_rows})\n\n{head}{body}"


def fairness_markdown(fair: Mapping[str, Mapping[str, float]], metric: str) -> str:
    """Worst partner and spread (std over partners) of the test ``metric`` per model kind."""
    lines = [
        f"Fairness across partners (test {metric})\n",
        "| model | worst partner | std over partners |",
        "|---|---|---|",
    ]
    lines += [f"| {kind} | {_cell(v.get('worst'))} | {_cell(v.get('std'))} |" for kind, v in fair.items()]
    return "\n".join(lines) + "\n"


def fairness_metrics(fair: Mapping[str, Mapping[str, float]], metric: str, kind: str) -> dict[str, float]:
    """``test_{metric}.worst`` / ``.std`` of one model kind (the names its MLflow run carries)."""
    return {f"test_{metric}.{k}": v for k, v in fair.get(kind, {}).items()}


def contributions_markdown(
    pairwise: Mapping[str, Mapping[str, float]], overall: Mapping[str, float], metric: str
) -> str:
    """Leave-one-partner-out table: row k = partner left out, column j = partner evaluated, last column = over
    all other partners; positive = k's participation improved j's test ``metric``."""
    partners = sorted({j for row in pairwise.values() for j in row} | set(pairwise))
    head = f"| without \\ on | {' | '.join(partners)} | all others |\n|---|{'---|' * (len(partners) + 1)}\n"
    body = "".join(
        f"| {k} | {' | '.join(_cell(pairwise[k].get(j), '+.3f') for j in partners)} | "
        f"{_cell(overall.get(k), '+.3f')} |\n"
        for k in pairwise
    )
    note = f"Contribution of each partner (row) to each partner's test {metric} (column); positive = helped\n\n"
    return note + head + body


#: Fewest training labels a partner's task needs before its label mean / std are logged (a mean of 1 is a label).
MIN_LABELS_FOR_STATS = 5


def label_metrics(moments: Mapping[str, Mapping[str, Sequence[float]]], tasks: Sequence[str]) -> dict[str, float]:
    """Per partner and task: training-label ``count``, ``mean`` and ``std`` from the count / sum / sum-of-squares
    moments partners already send for target scaling (nothing new leaves a partner; no quantile, min or max,
    which would each be one molecule's label). Mean and std only from :data:`MIN_LABELS_FOR_STATS` labels up."""
    out: dict[str, float] = {}
    for partner, m in moments.items():
        for i, task in enumerate(tasks):
            n = float(m["count"][i]) if i < len(m.get("count", ())) else 0.0
            prefix = f"labels.{task}"
            out[f"{prefix}.count.{partner}"] = n
            if n < MIN_LABELS_FOR_STATS:
                continue
            mean = float(m["sum"][i]) / n
            var = max(float(m["sumsq"][i]) / n - mean * mean, 0.0)
            out[f"{prefix}.mean.{partner}"] = mean
            out[f"{prefix}.std.{partner}"] = var**0.5
    return out


def overlap_markdown(stats: Overlap | None) -> str:
    """Scaffold Jaccard matrix between partners (from keyed digests); a note when it was not computed."""
    if stats is None:
        return "\nScaffold overlap between partners: not computed in sites mode.\n"
    names = sorted(stats.counts)

    def cell(a: str, b: str) -> str:
        return "1" if a == b else f"{stats.jaccard[(min(a, b), max(a, b))]:.2f}"

    lines = ["\nRing-scaffold overlap between partners (Jaccard; keyed digests, counts only)\n"]
    lines += [f"| | {' | '.join(names)} | scaffolds |", f"|---|{'---|' * (len(names) + 1)}"]
    lines += [f"| {a} | {' | '.join(cell(a, b) for b in names)} | {stats.counts[a]} |" for a in names]
    return "\n".join(lines) + "\n"
