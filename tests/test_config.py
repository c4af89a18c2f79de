from pathlib import Path

import pytest

from molfed.config import load_config
from molfed.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
tasks: [{name: y}]
partners:
  - {name: a, path: libs/a.csv}
  - {name: b, path: /abs/b.csv, workspace: ws/b}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_demo_config_is_valid():
    config = load_config(REPO / "configs" / "demo.yaml")
    assert [p.name for p in config.partners] == ["alpha", "beta", "gamma"]
    assert config.partners[0].path == (REPO / "demo_data" / "alpha.csv")


def test_relative_paths_resolve_against_config_dir_and_default_workspace(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL))
    a, b = config.partners
    assert a.path == tmp_path / "libs" / "a.csv"
    assert a.workspace == tmp_path / "workspaces" / "a"
    assert b.path == Path("/abs/b.csv") and b.workspace == tmp_path / "ws" / "b"
    assert config.quorum == 2


def test_overrides_parse_values_as_yaml(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL), ["federation.rounds=4", "train.lr=0.01", "partners.1.name=c"])
    assert config.federation.rounds == 4 and config.train.lr == 0.01 and config.partners[1].name == "c"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "train: {epochs: -1}",
            "cfg.yaml: train.epochs: Input should be greater than or equal to 1 (got -1)",
        ),
        (
            "model: {encoder: gin}",
            "model.encoder: unknown encoder 'gin'; choose from ['attentivefp', 'gine']",
        ),
        (
            "federation: {strategy: fedavgg}",
            "unknown strategy 'fedavgg'; choose from ['fedadagrad', 'fedadam', 'fedavg',",
        ),
        (
            "federation: {strategy_options: {mu: high}}",
            "federation.strategy_options.mu: Input should be a valid number",
        ),
        ("trian: {epochs: 1}", "trian: Extra inputs are not permitted"),
        ("data: {split_fractions: [0.5, 0.5, 0.5]}", "expected three non-negative fractions summing to 1"),
        ("federation: {min_partners: 3}", "federation.min_partners: got 3, expected at most 2"),
    ],
)
def test_validation_errors_name_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, MINIMAL + extra + "\n"))
    assert message in str(err.value)


def test_fine_tuning_is_refused_in_sites_mode_until_agents_run_it(tmp_path):
    text = "mode: sites\ntasks: [{name: y}]\npartners: [{name: a}, {name: b}]\nbaselines: {pooled: false}\n"
    assert load_config(_write(tmp_path, text)).baselines.fine_tune_epochs == 0
    with pytest.raises(ConfigError, match="baselines.fine_tune_epochs: site agents do not run a fine-tuning job"):
        load_config(_write(tmp_path, text), ["baselines.fine_tune_epochs=5"])


def test_duplicate_partner_names_rejected(tmp_path):
    text = "tasks: [{name: y}]\npartners:\n  - {name: a, path: x.csv}\n  - {name: a, path: y.csv}\n"
    with pytest.raises(ConfigError, match="duplicate partner name 'a'"):
        load_config(_write(tmp_path, text))


def test_label_columns_must_name_known_tasks(tmp_path):
    text = "tasks: [{name: y}]\npartners:\n  - {name: a, path: x.csv, label_columns: {z: col}}\n"
    with pytest.raises(ConfigError, match=r"partner 'a': label_columns names unknown task\(s\) \['z'\]"):
        load_config(_write(tmp_path, text))


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml, line 2, column \d+"):
        load_config(_write(tmp_path, "tasks: [{name: y}\npartners: [\n"))


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(_write(tmp_path, MINIMAL), ["federation.rounds"])
    with pytest.raises(ConfigError, match=r"got index '5', expected 0..1"):
        load_config(_write(tmp_path, MINIMAL), ["partners.5.name=x"])
