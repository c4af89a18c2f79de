import pytest

from molfed.config import parse_config
from molfed.errors import ConfigError
from molfed.federated.sampling import round_quorum, sample_partners, sample_size

NAMES = ["a", "b", "c", "d", "e"]


def test_sample_size_is_ceil_of_fraction_with_a_floor_and_a_cap():
    assert sample_size(5, 0.6, 1) == 3  # 0.6 * 5 = 3.0000000000000004 in floats: still 3
    assert sample_size(5, 0.5, 1) == 3  # ceil(2.5)
    assert sample_size(5, 0.1, 2) == 2  # min_fit_partners lifts ceil(0.5) = 1
    assert sample_size(3, 0.5, 5) == 3  # capped at the partners there are
    assert sample_size(4, 1.0, 1) == 4
    with pytest.raises(ValueError, match="fraction_fit"):
        sample_size(4, 0.0, 1)


def test_sampling_is_seeded_per_round_and_independent_of_name_order():
    rounds = [sample_partners(NAMES, r, seed=7, fraction_fit=0.4) for r in range(1, 21)]
    assert all(len(s) == 2 and set(s) <= set(NAMES) for s in rounds)
    assert rounds == [sample_partners(NAMES, r, seed=7, fraction_fit=0.4) for r in range(1, 21)]
    assert len({tuple(s) for s in rounds}) > 3  # rounds differ
    assert rounds != [sample_partners(NAMES, r, seed=8, fraction_fit=0.4) for r in range(1, 21)]
    shuffled = ["d", "a", "e", "c", "b"]
    assert [set(sample_partners(shuffled, r, seed=7, fraction_fit=0.4)) for r in range(1, 21)] == [
        set(s) for s in rounds
    ]
    counts = {n: sum(n in s for s in rounds) for n in NAMES}
    assert min(counts.values()) >= 2  # every partner gets asked now and then over 20 rounds


def test_full_fraction_asks_everyone_in_order_and_quorum_defaults_to_the_sample():
    assert sample_partners(NAMES, 3, seed=0) == NAMES
    assert round_quorum(3, None) == 3 and round_quorum(3, 2) == 2


def _config(**federation):
    raw = {
        "tasks": [{"name": "y"}],
        "partners": [{"name": n, "path": f"{n}.csv"} for n in ("a", "b", "c", "d")],
        "federation": federation,
    }
    return parse_config(raw, source="cfg.yaml")


def test_config_refuses_a_quorum_the_sample_cannot_meet():
    assert _config(fraction_fit=0.5, min_partners=2).federation.fraction_fit == 0.5
    with pytest.raises(ConfigError) as err:
        _config(fraction_fit=0.5, min_partners=3)
    assert "federation.min_partners: got 3, but only 2 of 4 partners are asked per round" in str(err.value)
    assert _config(fraction_fit=0.5, min_fit_partners=3, min_partners=3).federation.min_partners == 3
    with pytest.raises(ConfigError, match="federation.min_fit_partners: got 5, expected at most 4"):
        _config(min_fit_partners=5)
    with pytest.raises(ConfigError, match=r"federation.fraction_fit: Input should be greater than 0"):
        _config(fraction_fit=0)


def test_reserved_partner_names_are_refused():
    raw = {"tasks": [{"name": "y"}], "partners": [{"name": "worst", "path": "w.csv"}]}
    with pytest.raises(ConfigError, match="partner name 'worst' is reserved"):
        parse_config(raw, source="cfg.yaml")
