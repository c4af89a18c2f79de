"""Config for private tasks: where they may be declared, and errors that name the config key."""

from pathlib import Path

import pytest

from molfed.config import RunConfig, SiteConfig, load_config, load_site_config, parse_config, site_run_config
from molfed.errors import ConfigError

BASE = """
tasks: [{name: y}]
baselines: {pooled: false}
partners:
  - name: a
    path: a.csv
    private_tasks: [{name: mp, column: melting_point}, {name: herg, type: classification}]
  - {name: b, path: b.csv, shared_tasks: [], private_tasks: [{name: logd}], export_tracking_uri: "sqlite:///m.db"}
"""


def _load(tmp_path: Path, text: str) -> RunConfig:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return load_config(path)


def test_private_tasks_are_declared_per_partner(tmp_path):
    a, b = _load(tmp_path, BASE).partners
    assert [(t.name, t.type, t.label_column) for t in a.private_tasks] == [
        ("mp", "regression", "melting_point"),
        ("herg", "classification", "herg"),
    ]
    assert a.has_shared("y") and not b.has_shared("y") and a.report_private_metrics


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("{name: logd}", "{name: y}"), "partners.1.private_tasks.0.name: 'y' is a shared task"),
        (("{name: herg, type: classification}", "{name: mp}"), "partners.0.private_tasks.1.name: duplicate"),
        (
            ("column: melting_point", "column: smiles"),
            "partners.0.private_tasks.0.column: partner 'a': task 'mp' reads",
        ),
        (("shared_tasks: []", "shared_tasks: [z]"), "partners.1.shared_tasks: unknown task(s) ['z']"),
        (("private_tasks: [{name: logd}]", "private_tasks: []"), "partners.1.shared_tasks: partner 'b' has no task"),
        (("pooled: false", "pooled: true"), "baselines.pooled: partner 'a' has private tasks"),
        (("type: classification", "type: ordinal"), "partners.0.private_tasks.1.type"),
        (
            ("baselines: {pooled: false}", "baselines: {pooled: false}\ntracking: {tracking_uri: 'sqlite:///m.db'}"),
            "partners.1.export_tracking_uri: is the federation's tracking URI",
        ),
    ],
)
def test_mistakes_name_the_config_key(tmp_path, edit, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, BASE.replace(*edit))
    assert message in str(err.value)


def test_sites_mode_keeps_private_tasks_out_of_the_coordinators_config(tmp_path):
    text = "mode: sites\ntasks: [{name: y}]\nbaselines: {pooled: false}\n"
    text += "partners:\n  - {name: a, private_tasks: [{name: p}]}\n"
    with pytest.raises(ConfigError, match="partners.0: sites mode: .* belong in the partner's own site config"):
        _load(tmp_path, text)


def test_site_config_declares_private_tasks_checked_against_the_federation(tmp_path):
    site_path = tmp_path / "site.yaml"
    site_path.write_text("name: a\npath: a.csv\nworkspace: ws\nprivate_tasks: [{name: p, type: classification}]\n")
    site = load_site_config(site_path)
    federation = RunConfig.model_validate(
        {
            "mode": "sites",
            "tasks": [{"name": "y"}],
            "partners": [{"name": "a"}, {"name": "b"}],
            "baselines": {"pooled": False},
            "federation": {"min_partners": 2},  # the coordinator's quorum, not the site's concern
        }
    )
    config = site_run_config(federation, site)
    assert config.mode == "local" and config.partners[0].private_tasks[0].type == "classification"
    clash = site.model_copy(update={"private_tasks": [site.private_tasks[0].model_copy(update={"name": "y"})]})
    with pytest.raises(ConfigError, match="private_tasks.0.name: 'y' is a shared task"):
        site_run_config(federation, clash)
    with pytest.raises(Exception, match="private_tasks.1.name: duplicate private task 'p'"):
        SiteConfig.model_validate({**site.model_dump(), "private_tasks": [{"name": "p"}, {"name": "p"}]})


@pytest.mark.parametrize(
    "extra",
    [{"secure_aggregation": {"enabled": True}}, {"integrity": {"max_norm_ratio": 3.0}}],
    ids=["secagg", "screens"],
)
def test_trunk_only_partner_is_refused_with_secure_aggregation_or_screens(extra):
    raw = {
        "tasks": [{"name": "y"}],
        "baselines": {"pooled": False},
        "partners": [
            {"name": "a", "path": "a.csv"},
            {"name": "b", "path": "b.csv"},
            {"name": "c", "path": "c.csv", "shared_tasks": [], "private_tasks": [{"name": "p"}]},
        ],
        **extra,
    }
    with pytest.raises(ConfigError, match=r"partners\.2\.shared_tasks: partner 'c' sends the trunk only"):
        parse_config(raw)
