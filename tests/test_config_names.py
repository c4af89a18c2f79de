"""Partner, task (shared and private) and site names: one pattern, refused at validation with the config key.

Names become parts of MLflow metric names (``test_rmse.<task>.<partner>``): a character MLflow refuses crashed the
run minutes in, and a ``.`` made two different metrics share a name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from molfed.cli import main
from molfed.config import load_site_config, parse_config

BAD = ["expt (nM)", "a/b", "a:b", "log.s", "caf\u00e9", "x\n", "", "-lead", "_x", "a" * 64, "tab\there"]
GOOD = ["expt", "pIC50", "log-s", "task_2", "A" * 63, "7"]


def config(task: str = "y", partner: str = "acme", private: str | None = None) -> dict:
    entry: dict = {"name": partner, "path": "x.csv"}
    if private is not None:
        entry |= {"private_tasks": [{"name": private, "column": "z"}]}
    return {"tasks": [{"name": task}], "partners": [entry], "baselines": {"pooled": False}}


def error(raw: dict) -> str:
    with pytest.raises(Exception) as info:
        parse_config(raw)
    return str(info.value)


@pytest.mark.parametrize("name", BAD)
def test_bad_shared_task_private_task_and_partner_names_are_refused(name):
    assert error(config(task=name)).startswith("<config>: tasks.0.name: got ")
    assert error(config(private=name)).startswith("<config>: partners.0.private_tasks.0.name: got ")
    assert error(config(partner=name)).startswith("<config>: partners.0.name: got ")


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    parse_config(config(task=name, private=f"p{name}"[:63]))


def test_names_that_collide_in_metric_names_are_refused():
    assert "is also a partner's name" in error(config(task="acme"))
    assert "is also a partner's name" in error(config(private="acme"))
    assert "reserved" in error(config(task="worst"))


@pytest.mark.parametrize("name", ["log.s", "bad name", "\u0430cme"])  # the last one starts with a Cyrillic a
def test_site_config_name_is_checked_by_molfed_validate_style_one_line(tmp_path, name, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": name, "path": "lib.csv", "workspace": "ws"}, allow_unicode=True))
    with pytest.raises(Exception) as info:
        load_site_config(path)
    assert str(info.value).startswith(f"{path}: name: got ")
    code = main(["site-agent", str(path)])  # refused before anything starts
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{path}: name: got " in err


def test_molfed_validate_names_the_key_in_one_line(tmp_path, capsys):
    raw = config(task="pIC50 (nM)")
    raw["partners"][0]["path"] = str(Path(tmp_path / "lib.csv"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"molfed: error: {path}: tasks.0.name: got 'pIC50 (nM)', expected")
