"""The deployment's run form: Prefect renders it from the flow's parameter schema (RunConfig's JSON schema).

Prefect 3's form sorts fields by ``position``, shows ``description`` as Markdown (so ``<name>`` vanishes), offers a
dropdown for ``enum`` and shows no ``minimum``/``maximum``: these tests pin what a chemist sees there.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from molfed.config import RunConfig
from molfed.config.schema import CHAMPION_METRICS, plain_text


def _ordered(props: dict[str, Any]) -> list[str]:
    return [name for name, _ in sorted(props.items(), key=lambda kv: kv[1]["position"])]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return RunConfig.model_json_schema()


@pytest.fixture(scope="module")
def prefect_schema() -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    from flows.federated_training import federated_training

    return parameter_schema(federated_training).model_dump_for_openapi()


def _all_properties(defs: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(model, name, prop) for model, d in defs.items() for name, prop in d.get("properties", {}).items()]


def test_a_chemist_meets_name_partners_tasks_rounds_strategy_first(schema: dict[str, Any]) -> None:
    top = _ordered(schema["properties"])
    assert top[:4] == ["name", "partners", "tasks", "federation"]
    assert _ordered(schema["$defs"]["FederationConfig"]["properties"])[:2] == ["rounds", "strategy"]
    partner = _ordered(schema["$defs"]["PartnerConfig"]["properties"])
    assert partner[:2] == ["name", "path"]  # not the inherited private-task fields
    assert partner.index("private_tasks") > partner.index("workspace")


def test_advanced_sections_come_last_and_say_so(schema: dict[str, Any]) -> None:
    top = schema["properties"]
    order = _ordered(top)
    advanced = [n for n in order if top[n]["title"].endswith("(advanced)")]
    assert {"privacy", "integrity", "secure_aggregation", "data", "tracking"} <= set(advanced)
    assert order[-len(advanced) :] == advanced
    assert not top["model"]["title"].endswith("(advanced)")


def test_every_field_of_every_model_has_a_position(schema: dict[str, Any]) -> None:
    for model, name, prop in _all_properties(schema["$defs"]) + [
        ("RunConfig", n, p) for n, p in schema["properties"].items()
    ]:
        assert isinstance(prop.get("position"), int), f"{model}.{name}"
    for model, d in schema["$defs"].items():
        positions = sorted(p["position"] for p in d["properties"].values())
        assert positions == list(range(len(positions))), model


def test_internal_fields_are_not_in_the_form(schema: dict[str, Any], prefect_schema: dict[str, Any]) -> None:
    assert "parent_run_id" not in schema["$defs"]["TrackingConfig"]["properties"]
    assert list(prefect_schema["properties"]) == ["config"]  # resume_run_id is for `molfed resume` only
    assert "parent_run_id" not in prefect_schema["definitions"]["TrackingConfig"]["properties"]
    # ... yet still a config field (the leave-one-partner-out estimate sets it)
    assert "parent_run_id" in RunConfig.model_fields["tracking"].annotation.model_fields


def test_choices_are_dropdowns(prefect_schema: dict[str, Any]) -> None:
    defs = prefect_schema["definitions"]
    assert "fedavg" in defs["FederationConfig"]["properties"]["strategy"]["enum"]
    assert "gine" in defs["ModelConfig"]["properties"]["encoder"]["enum"]
    assert defs["ChampionConfig"]["properties"]["metric"]["enum"] == list(CHAMPION_METRICS)


def test_champion_metrics_are_the_metrics_molfed_computes() -> None:
    from molfed.train.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

    assert set(CHAMPION_METRICS) == set(REGRESSION_METRICS + CLASSIFICATION_METRICS)


def test_a_typo_in_a_choice_is_refused() -> None:
    from molfed.config import parse_config
    from molfed.errors import ConfigError

    base = {"tasks": [{"name": "y"}], "partners": [{"name": "a", "path": "a.csv"}]}
    with pytest.raises(ConfigError, match="champion.metric"):
        parse_config({**base, "champion": {"metric": "rmsee"}}, source="test")


def test_descriptions_are_plain_text_with_bounds(prefect_schema: dict[str, Any]) -> None:
    defs = prefect_schema["definitions"]
    for model, name, prop in _all_properties(defs) + [(m, "", d) for m, d in defs.items()]:
        text = prop.get("description", "")
        where = f"{model}.{name}"
        assert not re.search(r":\w+:`", text), where  # Sphinx roles
        assert not re.search(r"<[^>]*>", text), where  # would be read as HTML and vanish
        if name and any(k in str(prop) for k in ("'minimum'", "'maximum'", "'exclusiveMinimum'")):
            assert "Allowed:" in text, where
    assert defs["FederationConfig"]["properties"]["rounds"]["description"].endswith("Allowed: 1 ≤ value ≤ 100000.")
    assert defs["TrainConfig"]["properties"]["lr"]["description"].endswith("Allowed: 0 < value ≤ 10.")
    assert "partner-{name}" in defs["RunConfig"]["properties"]["mode"]["description"]


def test_plain_text() -> None:
    assert plain_text("see :mod:`molfed.privacy` and\n  <workspace>/x") == "see molfed.privacy and {workspace}/x"


def test_form_metadata_changes_no_default() -> None:
    config = RunConfig(tasks=[{"name": "y"}], partners=[{"name": "a", "path": "a.csv"}])
    assert config.federation.rounds == 30 and config.train.lr == 3e-3 and config.champion.metric == "rmse"
    assert config.tracking.parent_run_id is None
