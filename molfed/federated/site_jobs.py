"""What every job at a partner's site does first and last: check that it runs at the partner's own site, and keep
an error's details there (the shared Prefect server learns only the kind of error).

Light on purpose (no torch, PyG, RDKit or MLflow): the secure-aggregation steps import it in a fresh process per job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from molfed.config import SiteConfig, load_site_config
from molfed.errors import ConfigError

SITE_CONFIG_ENV = "MOLFED_SITE_CONFIG"


def this_site(partner: str) -> SiteConfig:
    """The site config of the worker running this job, checked to belong to ``partner``.

    Raises
    ------
    ConfigError
        If the worker was started without a site config, or serves another partner.
    """
    path = os.environ.get(SITE_CONFIG_ENV)
    if not path:
        raise ConfigError(f"{SITE_CONFIG_ENV} is not set: start this partner's worker with its site config")
    site = load_site_config(path)
    if site.name != partner:
        raise ConfigError(f"this worker serves partner {site.name!r}, but the job is for {partner!r}")
    return site


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
