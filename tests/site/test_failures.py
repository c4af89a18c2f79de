"""A site job's error details stay in the site's jobs.log; the shared servers learn only the error's kind."""

from __future__ import annotations

import pytest

from molfed.config import load_site_config
from molfed.site.failures import errors_stay_at_site


@pytest.fixture
def site_config(tmp_path):
    (tmp_path / "lib.csv").write_text("smiles,y\nCCO,1.0\n")
    path = tmp_path / "site.yaml"
    path.write_text("name: beta\npath: lib.csv\nlabel_columns: {y: y}\nworkspace: ws\n")
    return path


def test_error_details_stay_in_the_sites_jobs_log(site_config):
    site = load_site_config(site_config)
    assert site.name == "beta" and site.workspace == site_config.parent / "ws"
    secret = "row 7 of /data/beta/lib.csv: CC(=O)Nc1ccc(O)cc1"
    with pytest.raises(RuntimeError) as raised, errors_stay_at_site(site, "prepare round 0"):
        raise ValueError(secret)
    assert secret not in str(raised.value) and raised.value.__cause__ is None and raised.value.__suppress_context__
    assert str(raised.value).startswith("partner beta: prepare round 0 failed with ValueError")
    assert (site.workspace / "jobs.log").read_text() == f"prepare round 0: ValueError: {secret}\n"
