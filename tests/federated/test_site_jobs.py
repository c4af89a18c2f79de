"""A site job refuses to run for another partner or without a site config, and keeps error details at the site."""

from __future__ import annotations

import pytest

from molfed.errors import ConfigError
from molfed.federated.site_jobs import SITE_CONFIG_ENV, errors_stay_at_site, this_site


@pytest.fixture
def site_config(tmp_path, monkeypatch):
    (tmp_path / "lib.csv").write_text("smiles,y\nCCO,1.0\n")
    path = tmp_path / "site.yaml"
    path.write_text("name: beta\npath: lib.csv\nlabel_columns: {y: y}\nworkspace: ws\n")
    monkeypatch.setenv(SITE_CONFIG_ENV, str(path))
    return path


def test_the_job_must_be_for_this_sites_partner(site_config):
    site = this_site("beta")
    assert site.name == "beta" and site.workspace == site_config.parent / "ws"
    with pytest.raises(ConfigError, match="this worker serves partner 'beta', but the job is for 'gamma'"):
        this_site("gamma")


def test_a_worker_without_a_site_config_is_refused(monkeypatch):
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"{SITE_CONFIG_ENV} is not set"):
        this_site("beta")


def test_error_details_stay_in_the_sites_jobs_log(site_config):
    site = this_site("beta")
    secret = "row 7 of /data/beta/lib.csv: CC(=O)Nc1ccc(O)cc1"
    with pytest.raises(RuntimeError) as raised, errors_stay_at_site(site, "prepare round 0"):
        raise ValueError(secret)
    assert secret not in str(raised.value) and raised.value.__cause__ is None and raised.value.__suppress_context__
    assert str(raised.value).startswith("partner beta: prepare round 0 failed with ValueError")
    assert (site.workspace / "jobs.log").read_text() == f"prepare round 0: ValueError: {secret}\n"
