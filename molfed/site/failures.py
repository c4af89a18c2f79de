"""What every job at a partner's site does on failure: keep the error's details at the site (the shared Prefect server
and the coordinator learn only the kind of error)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from molfed.config import SiteConfig


@contextmanager
def errors_stay_at_site(site: SiteConfig, what: str) -> Iterator[None]:
    """Append a failure's full message to the site's ``jobs.log`` and re-raise only its kind.

    The full message may name the partner's file or rows: it stays in the partner's workspace.
    """
    try:
        yield
    except Exception as exc:
        site.workspace.mkdir(parents=True, exist_ok=True)
        with open(site.workspace / "jobs.log", "a", encoding="utf-8") as log:
            log.write(f"{what}: {type(exc).__name__}: {exc}\n")
        raise RuntimeError(
            f"partner {site.name}: {what} failed with {type(exc).__name__} (details in the partner's workspace, "
            "jobs.log)"
        ) from None
