"""The site's append-only audit log: one JSON line per decision of its agent (who asked, what, when, why).

It holds ids, names and reasons only (never a structure, label or path of the library) and stays at the site,
in ``<workspace>/agent/audit.jsonl`` (mode 0600). Each line is flushed and synced before the agent acts on the
decision it records.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from molfed.site.requests import append_line

Decision = Literal["refused", "accepted", "completed", "failed", "started", "stopped"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    decision: Decision
    flow_run: str = ""
    """Prefect flow-run id (and name) the request came as."""
    deployment: str = ""
    """The deployment id the flow run names (informational: the agent never runs a deployment's code)."""
    key_id: str = ""
    """Coordinator key that signed the request ("" if unsigned or not checked)."""
    federation: str = ""
    action: str = ""
    server_round: int | None = None
    reason: str = ""


class AuditLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(descriptor)

    def write(self, entry: AuditEntry) -> None:
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **asdict(entry)}
        append_line(self.path, json.dumps(line, ensure_ascii=True))

    def entries(self) -> list[dict]:
        """Every entry so far (for tests and the site's own tools)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line torn by a crash
                continue
        return out


def audit_path(workspace: Path) -> Path:
    return Path(workspace) / "agent" / "audit.jsonl"
