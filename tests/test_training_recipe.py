"""The seed CNN's default recipe: its learning-rate schedule and how the defaults resolve."""

from __future__ import annotations

from itertools import pairwise

import pytest

from components.common.config import ConfigError
from components.training.config import TrainConfig
from components.training.models import MODELS, WARMUP_SHARE, learning_rate


def test_cosine_schedule_warms_up_then_decays_to_zero_by_step():
    peak, total = 2e-3, 200
    schedule = learning_rate("cosine", peak, total)
    warmup = int(WARMUP_SHARE * total)
    values = [float(schedule(step)) for step in range(total + 1)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[warmup] == pytest.approx(peak, rel=1e-6)
    assert all(a <= b for a, b in pairwise(values[: warmup + 1]))
    assert all(a >= b for a, b in pairwise(values[warmup:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-9)
    # A function of the step alone: the same step gives the same rate in a fresh schedule.
    again = learning_rate("cosine", peak, total)
    assert float(again(123)) == pytest.approx(values[123], rel=1e-9)
    assert learning_rate("plateau", peak, total) == peak


def test_each_model_resolves_its_own_recipe_unless_given():
    for model, spec in MODELS.items():
        config = TrainConfig(dataset_uri="d", model=model)
        assert config.resolved_learning_rate == spec.default_learning_rate
        assert config.resolved_schedule == spec.default_schedule
        assert config.to_dict()["lr_schedule"] == spec.default_schedule
    cnn = MODELS["seed_cnn"]
    assert cnn.default_schedule == "cosine" and cnn.default_learning_rate > 0
    given = TrainConfig(dataset_uri="d", learning_rate=5e-4, lr_schedule="plateau")
    assert (given.resolved_learning_rate, given.resolved_schedule) == (5e-4, "plateau")


def test_bad_schedule_or_learning_rate_is_refused():
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(dataset_uri="d", lr_schedule="linear")
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig(dataset_uri="d", learning_rate=-1.0)
