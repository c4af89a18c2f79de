"""The site's own policy (default deny) on the request and on the federation's real settings; its DP budget."""

import pytest

from molfed.config import parse_config
from molfed.federated.signing import generate_keypair
from molfed.site.policy import EpsilonLedger, SitePolicy, check_federation, check_request
from molfed.site.requests import RequestRefused

FEDERATION = "fed-name"


def _config(**changes):
    """A minimal sites-mode federation ``fed-name`` (task y, partners alpha, beta); ``changes``: top-level keys."""
    raw = {
        "mode": "sites",
        "name": FEDERATION,
        "tasks": [{"name": "y"}],
        "partners": [{"name": "alpha"}, {"name": "beta"}],
        "baselines": {"pooled": False},
    }
    return parse_config({**raw, **changes})


def _signing():
    return {"signing": True, "public_keys": {"alpha": generate_keypair()[1], "beta": generate_keypair()[1]}}


LOCAL = {"mode": "local", "partners": [{"name": "alpha", "path": "a.csv"}, {"name": "beta", "path": "b.csv"}]}

# (policy, settings the policy refuses, settings it accepts, the refusal's words)
RULES = {
    "mode": ({}, LOCAL, {}, "the federation runs in mode 'local', expected 'sites'"),
    "tasks": (
        {"tasks": ["y", "logd"]},
        {"tasks": [{"name": "y"}, {"name": "herg"}]},
        {"tasks": [{"name": "y"}, {"name": "logd"}]},
        "shared task(s) ['herg'] may not leave this site",
    ),
    "rounds": (
        {"max_rounds": 5},
        {"federation": {"rounds": 6}},
        {"federation": {"rounds": 5}},
        "6 rounds, at most 5 allowed",
    ),
    "epochs": ({"max_epochs": 3}, {"train": {"epochs": 4}}, {"train": {"epochs": 3}}, "4 local epochs, at most 3"),
    "secure aggregation": (
        {"require_secure_aggregation": True},
        {},
        {"secure_aggregation": {"enabled": True}},
        "requires secure aggregation",
    ),
    "signing": ({"require_signing": True}, {}, {"integrity": _signing()}, "requires signed updates"),
    "epsilon": ({"max_epsilon": 8.0}, {}, {"privacy": {"mode": "sample"}}, "requires sample-level DP (epsilon <= 8)"),
}


@pytest.mark.parametrize("rule", RULES)
def test_each_federation_rule_refuses_what_it_forbids_and_passes_what_it_allows(rule):
    rules, refused, allowed, words = RULES[rule]
    policy = SitePolicy(**{"federations": [FEDERATION], "tasks": ["y"], **rules})
    with pytest.raises(RequestRefused) as err:
        check_federation(policy, _config(**refused), federation=FEDERATION)
    assert str(err.value).startswith("policy: ") and words in str(err.value)
    check_federation(policy, _config(**allowed), federation=FEDERATION)


def test_the_config_must_name_the_federation_the_request_was_signed_for():
    policy = SitePolicy(federations=[FEDERATION, "other-fed"], tasks=["y"])
    with pytest.raises(RequestRefused, match="the config names federation 'fed-name', the request 'other-fed'"):
        check_federation(policy, _config(), federation="other-fed")


def test_the_local_only_baseline_is_trained_only_if_the_policy_allows_it():
    config = _config()
    check_federation(SitePolicy(federations=[FEDERATION], tasks=["y"]), config, federation=FEDERATION, local_only=True)
    strict = SitePolicy(federations=[FEDERATION], tasks=["y"], allow_local_only=False)
    check_federation(strict, config, federation=FEDERATION)
    with pytest.raises(RequestRefused, match="does not train the local-only baseline"):
        check_federation(strict, config, federation=FEDERATION, local_only=True)


def test_an_empty_policy_allows_no_task():
    with pytest.raises(RequestRefused, match=r"shared task\(s\) \['y'\]"):
        check_federation(SitePolicy(federations=[FEDERATION]), _config(), federation=FEDERATION)


def test_a_request_is_checked_for_its_job_kind_and_federation():
    policy = SitePolicy(federations=[FEDERATION], tasks=["y"], jobs=["prepare", "round"])
    check_request(policy, action="round", federation=FEDERATION)
    with pytest.raises(RequestRefused, match="^policy: job kind 'finish' is not allowed"):
        check_request(policy, action="finish", federation=FEDERATION)
    with pytest.raises(RequestRefused, match="^policy: federation 'other-fed' is not one this site serves"):
        check_request(policy, action="round", federation="other-fed")


def test_a_default_policy_serves_no_federation():
    with pytest.raises(RequestRefused, match="^policy: federation"):
        check_request(SitePolicy(), action="prepare", federation=FEDERATION)


DP = {"privacy": {"mode": "sample", "noise_multiplier": 1.0}, "train": {"epochs": 1, "batch_size": 10}}


def test_the_epsilon_ledger_grows_with_each_round_and_persists(tmp_path):
    config, path = _config(**DP), tmp_path / "agent" / "epsilon.json"
    ledger = EpsilonLedger(path, delta=1e-5)
    first = ledger.charge(config, n_train=100, budget=100.0, server_round=1)
    second = ledger.charge(config, n_train=100, budget=100.0, server_round=2)
    assert 0.0 < first < second
    reopened = EpsilonLedger(path, delta=1e-5)
    assert reopened.ledger.epsilon("site") == pytest.approx(second)
    assert reopened.charge(config, n_train=100, budget=100.0, server_round=3) > second


def test_a_round_over_the_budget_is_refused_without_spending(tmp_path):
    config, path = _config(**DP), tmp_path / "epsilon.json"
    ledger = EpsilonLedger(path, delta=1e-5)
    spent = ledger.charge(config, n_train=100, budget=100.0, server_round=1)
    saved = path.read_text(encoding="utf-8")
    with pytest.raises(RequestRefused, match=r"^policy: round 2 would raise this site's epsilon .* > max_epsilon"):
        ledger.charge(config, n_train=100, budget=spent + 0.01, server_round=2)
    assert ledger.ledger.epsilon("site") == spent
    assert path.read_text(encoding="utf-8") == saved
    assert EpsilonLedger(path, delta=1e-5).ledger.epsilon("site") == pytest.approx(spent)


def test_the_ledger_keeps_the_stricter_delta_when_reopened_with_another(tmp_path):
    path = tmp_path / "epsilon.json"
    spent = EpsilonLedger(path, delta=1e-5).charge(_config(**DP), n_train=100, budget=100.0, server_round=1)
    looser = EpsilonLedger(path, delta=1e-3)
    assert looser.ledger.delta == 1e-5 and looser.ledger.epsilon("site") == pytest.approx(spent)
