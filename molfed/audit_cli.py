"""``molfed audit``: build each partner's salted index, scan the MLflow and Prefect stores and log files, report.

Prints counts of what was scanned and every hit as file, place and kind (never the structure); exit status 1 on
any hit, 0 when clean.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from molfed.audit import HashIndex, ScanReport, scan_files
from molfed.audit_sources import default_tracking_uri, mlflow_roots, partner_index, prefect_roots
from molfed.chem.standardize import StandardizeOptions
from molfed.config import RunConfig, load_config, load_site_config
from molfed.errors import MolfedError


def build_indexes(config: RunConfig, site_configs: list[Path]) -> list[HashIndex]:
    """One index per partner with a known library: local-mode partners, or the given site configs."""
    tasks = [t.name for t in config.tasks]
    types = [t.type for t in config.tasks]
    options = StandardizeOptions(**config.data.standardize.model_dump())
    partners = [p for p in config.partners if p.path is not None] + [
        load_site_config(s).as_partner() for s in site_configs
    ]
    if not partners:
        raise MolfedError("audit: no partner library known; in sites mode pass each partner's --site-config")
    return [
        partner_index(
            p.name,
            p.path,
            smiles_column=p.smiles_column,
            label_columns=[p.column_for(t) for t in tasks],
            task_types=types,
            standardize=options,
            duplicates=config.data.duplicates,
        )
        for p in partners
        if p.path is not None
    ]


def audit_stores(config: RunConfig, *, tracking_uri: str | None = None, prefect_home: Path | None = None) -> ScanReport:
    """``molfed audit`` as a function (the test suite runs it after every flow test): the config's partners'
    index over its MLflow store and Prefect's home."""
    uri = tracking_uri or config.tracking.tracking_uri or default_tracking_uri()
    return scan_files([*mlflow_roots(uri), *prefect_roots(prefect_home)], build_indexes(config, []))


def run_audit(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    indexes = build_indexes(config, args.site_config)
    uri = args.tracking_uri or config.tracking.tracking_uri or default_tracking_uri()
    sources = {
        "mlflow": mlflow_roots(uri),
        "prefect": prefect_roots(args.prefect_home),
        "extra": [p for p in args.path if p.exists()],
    }
    missing = [p for p in args.path if not p.exists()]
    if missing:
        raise MolfedError(f"audit: --path {missing[0]} does not exist")
    needles = ", ".join(f"{i.name} {len(i.smiles)} SMILES + {len(i.inchikeys)} InChIKeys" for i in indexes)
    print(f"index (salted HMAC-SHA256): {needles}")
    total = 0
    for source, roots in sources.items():
        if not roots:
            continue
        report = scan_files(roots, indexes)
        total += len(report.hits)
        _print_report(source, roots, report)
    print(f"audit: {'FAILED, ' + str(total) + ' hit(s)' if total else 'clean, no partner structure found'}")
    return 1 if total else 0


def _print_report(source: str, roots: list[Path], report: ScanReport) -> None:
    print(
        f"{source}: {report.files} files ({report.bytes / 1e6:.1f} MB), {report.members} archive members, "
        f"{report.tables} SQLite tables / {report.rows} rows under {', '.join(map(str, roots))}"
    )
    for unreadable in report.unreadable:
        print(f"  unreadable: {unreadable}")
    grouped = Counter((str(h.path), h.location, h.kind, h.partner) for h in report.hits)
    for (path, location, kind, partner), n in sorted(grouped.items()):
        where = f" [{location}]" if location else ""
        print(f"  HIT {path}{where}: {n} {kind} needle(s) of partner {partner}")
