import math

import pytest

from molfed.federated.partner import TrainSettings
from molfed.train.schedule import FLOOR, lr_factor


def test_constant_is_one_every_round_after_warmup():
    assert [lr_factor("constant", r, 5) for r in range(1, 6)] == [1.0] * 5
    assert [lr_factor("constant", r, 5, warmup_rounds=3) for r in range(1, 6)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_falls_from_the_rate_to_the_floor_monotonically():
    values = [lr_factor("cosine", r, 10, warmup_rounds=2) for r in range(1, 11)]
    assert values[:2] == [1 / 3, 2 / 3] and values[2] == 1.0 and math.isclose(values[-1], FLOOR)
    assert all(a > b for a, b in zip(values[2:], values[3:], strict=False))


def test_rounds_outside_the_schedule_are_clamped_and_unknown_names_refused():
    assert lr_factor("cosine", 0, 10) == lr_factor("cosine", 1, 10) == 1.0
    assert lr_factor("cosine", 50, 10) == lr_factor("cosine", 10, 10)
    assert lr_factor("cosine", 1, 1) == 1.0
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        lr_factor("linear", 1, 10)


def test_train_settings_scale_the_configured_rate():
    s = TrainSettings(epochs=1, batch_size=8, lr=0.01, lr_schedule="cosine", rounds=3)
    assert [round(s.lr_at(r), 6) for r in (1, 2, 3)] == [0.01, 0.0055, 0.001]
