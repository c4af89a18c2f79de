"""Test-only fault injection: make a named partner's job raise or stall, to exercise retries, timeouts and quorum.

Off unless the environment variable ``MOLFED_TEST_FAULTS`` is set (it is not a config key: users never need it).
Its value is a ``;``-separated list of ``PARTNER@STAGE=ACTION``:

- ``STAGE``: ``round2`` (round 2 only), ``round*`` (every round) or ``finish``;
- ``ACTION``: ``raise`` (every attempt fails), ``raise-once`` (the first attempt in this process fails, a retry
  succeeds) or ``sleep:SECONDS`` (stall, in short steps so a task timeout can interrupt it).

Example: ``MOLFED_TEST_FAULTS="beta@round2=raise;gamma@finish=sleep:30"``.
"""

from __future__ import annotations

import os
import threading
import time

ENV = "MOLFED_TEST_FAULTS"
_fired: set[str] = set()
_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised by :func:`inject` (a retryable error, unlike user mistakes)."""


def inject(partner: str, stage: str, server_round: int | None = None) -> None:
    """Apply the fault configured for ``partner`` at ``stage`` (``"round"`` with ``server_round``, or
    ``"finish"``), if any.

    Raises
    ------
    InjectedFault
        For a ``raise`` fault, or ``raise-once`` on its first call in this process.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted = {f"{stage}{server_round}" if server_round is not None else stage, f"{stage}*"}
    for item in filter(None, (x.strip() for x in spec.split(";"))):
        target, _, action = item.partition("=")
        who, _, where = target.partition("@")
        if who != partner or where not in wanted:
            continue
        if action == "raise":
            raise InjectedFault(f"injected fault at {partner}@{where}")
        if action == "raise-once":
            with _lock:
                first = item not in _fired
                _fired.add(item)
            if first:
                raise InjectedFault(f"injected one-off fault at {partner}@{where}")
        elif action.startswith("sleep:"):
            deadline = time.monotonic() + float(action.removeprefix("sleep:"))
            while time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} in {item!r}; use raise, raise-once or sleep:S")
