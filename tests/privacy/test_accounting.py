"""The privacy ledger (Opacus RDP) and the budget guard."""

import math

import pytest
from opacus.accountants import RDPAccountant

from molfed.federated.dp_budget import (
    FEDERATION,
    PrivacyBudgetError,
    epsilon_metrics,
    next_round_allowed,
    require_next_round,
    require_rounds,
    round_costs,
    rounds_within_budget,
    spend_round,
)
from molfed.privacy.accountant import PrivacyLedger, epsilon_of


def test_ledger_matches_opacus_stepping_for_known_parameters():
    reference = RDPAccountant()
    for _ in range(600):
        reference.step(noise_multiplier=1.1, sample_rate=256 / 60_000)
    ledger = PrivacyLedger(1e-5)
    for _ in range(3):  # three rounds of 200 steps compose to the same 600 steps
        ledger.spend("a", noise_multiplier=1.1, sample_rate=256 / 60_000, steps=200)
    assert ledger.epsilon("a") == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert 0.3 < ledger.epsilon("a") < 1.5  # Abadi et al.'s MNIST setting, ~10 epochs


def test_full_batch_gaussian_is_below_the_classic_rdp_bound():
    # q = 1: RDP of T Gaussian steps is T * alpha / (2 sigma^2); Opacus's conversion is at least as tight as
    # eps = min_alpha RDP + log(1/delta) / (alpha - 1).
    sigma, steps, delta = 4.0, 10, 1e-5
    classic = min(
        steps * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in [1 + x / 100 for x in range(1, 6000)]
    )
    eps = epsilon_of([(sigma, 1.0, steps)], delta)
    assert eps <= classic + 1e-9 and eps > 0.6 * classic


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    eps = [epsilon_of([(1.0, 0.1, t)], 1e-5) for t in (1, 10, 100, 1000)]
    assert eps == sorted(eps) and len(set(eps)) == 4
    by_noise = [epsilon_of([(s, 0.1, 100)], 1e-5) for s in (0.8, 1.0, 2.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True)
    assert epsilon_of([], 1e-5) == 0.0 and epsilon_of([(0.0, 0.1, 1)], 1e-5) == math.inf


def test_ledger_state_round_trips_and_refuses_another_delta():
    ledger = PrivacyLedger(1e-5)
    ledger.spend("a", noise_multiplier=1.0, sample_rate=0.1, steps=20)
    ledger.spend("b", noise_multiplier=2.0, sample_rate=0.2, steps=5)
    restored = PrivacyLedger(1e-5)
    restored.load_state_dict(ledger.state_dict())
    assert restored.epsilons() == ledger.epsilons()
    with pytest.raises(ValueError, match="delta"):
        PrivacyLedger(1e-6).load_state_dict(ledger.state_dict())


def test_round_costs_follow_poisson_sampling_per_partner():
    costs = round_costs("sample", noise_multiplier=1.2, n_train={"b": 100, "a": 256}, batch_size=32, epochs=2)
    assert [(c.subject, c.sample_rate, c.steps) for c in costs] == [("a", 0.125, 16), ("b", 0.32, 6)]
    assert [c.subject for c in round_costs("client", noise_multiplier=1, n_train={"a": 5}, batch_size=1, epochs=1)] == [
        FEDERATION
    ]
    assert round_costs("off", noise_multiplier=1, n_train={"a": 5}, batch_size=1, epochs=1) == []


def test_budget_guard_refuses_the_round_that_would_exceed_it_before_it_runs():
    costs = round_costs("sample", noise_multiplier=1.0, n_train={"small": 64, "big": 640}, batch_size=32, epochs=1)
    ledger = PrivacyLedger(1e-5)
    after_one = {
        c.subject: ledger.epsilon_if(c.subject, noise_multiplier=1.0, sample_rate=c.sample_rate, steps=c.steps)
        for c in costs
    }
    assert after_one["small"] > after_one["big"]  # the smaller partner is sampled more often
    budget = after_one["small"] * 2.5
    fit, message = rounds_within_budget(costs, delta=1e-5, budget=budget, max_rounds=50)
    assert 2 <= fit < 50
    for r in range(1, fit + 1):
        require_next_round(ledger, costs, budget, r)
        metrics = spend_round(ledger, costs)
    assert metrics["dp_epsilon"] == metrics["dp_epsilon.small"] <= budget
    with pytest.raises(
        PrivacyBudgetError,
        match=rf"round {fit + 1} would raise the epsilon of partner 'small' from .*stopping before round {fit + 1}",
    ):
        require_next_round(ledger, costs, budget, fit + 1)
    assert ledger.epsilon("small") == metrics["dp_epsilon.small"]  # the refused round spent nothing
    with pytest.raises(PrivacyBudgetError, match=rf"allows {fit} of federation.rounds=50"):
        require_rounds(costs, delta=1e-5, budget=budget, rounds=50)
    require_rounds(costs, delta=1e-5, budget=budget, rounds=fit)
    assert next_round_allowed(ledger, costs, None, 99) == (True, "")


def test_only_partners_that_took_part_spend():
    costs = round_costs("sample", noise_multiplier=1.0, n_train={"a": 64, "b": 64}, batch_size=32, epochs=1)
    ledger = PrivacyLedger(1e-5)
    metrics = spend_round(ledger, costs, participants=["a"])
    assert metrics["dp_epsilon.a"] > 0 and "dp_epsilon.b" not in metrics
    client = round_costs("client", noise_multiplier=1.0, n_train={"a": 64}, batch_size=32, epochs=1)
    assert set(epsilon_metrics(PrivacyLedger(1e-5))) == set()
    assert set(spend_round(PrivacyLedger(1e-5), client, participants=[])) == {"dp_client_epsilon"}
