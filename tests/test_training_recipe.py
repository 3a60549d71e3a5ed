"""The seed CNN's default recipe: its learning-rate schedule, mirroring, how defaults resolve."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from components.common.config import ConfigError
from components.training.artifacts import checkpoint_key
from components.training.config import TrainConfig
from components.training.models import (
    MODELS,
    WARMUP_SHARE,
    build_seed_cnn,
    classification_loss,
    learning_rate,
    mirror_averaged,
)


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


def test_label_smoothing_follows_the_model_unless_given():
    assert TrainConfig(dataset_uri="d").resolved_label_smoothing == pytest.approx(0.1)
    assert TrainConfig(dataset_uri="d", model="inception_v3").resolved_label_smoothing == 0.0
    off = TrainConfig(dataset_uri="d", label_smoothing=0.0)
    assert off.resolved_label_smoothing == 0.0 and off.to_dict()["label_smoothing"] == 0.0
    assert TrainConfig(dataset_uri="d", label_smoothing=0.2).to_dict()["label_smoothing"] == 0.2
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(dataset_uri="d", label_smoothing=1.0)


def test_smoothed_loss_is_cross_entropy_against_smoothed_one_hot_labels():
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(5), size=8).astype("float32")
    labels = rng.integers(0, 5, size=(8, 1))
    smoothing = 0.1
    target = np.eye(5)[labels[:, 0]] * (1 - smoothing) + smoothing / 5
    by_hand = -(target * np.log(probabilities)).sum(axis=1)
    loss = classification_loss(smoothing, 5)
    assert np.asarray(loss(labels, probabilities)) == pytest.approx(by_hand, rel=1e-5)
    keras_own = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    assert float(keras_own(np.eye(5)[labels[:, 0]], probabilities)) == pytest.approx(
        by_hand.mean(), rel=1e-5
    )
    assert classification_loss(0.0, 5) == "sparse_categorical_crossentropy"


def test_early_stopping_leaves_a_cosine_phase_to_its_end_unless_asked():
    from types import SimpleNamespace

    from components.training.checkpoint import RunFlags
    from components.training.config import DEFAULT_PATIENCE
    from components.training.train import phase_callbacks

    cosine = TrainConfig(dataset_uri="d")  # the seed CNN's default schedule
    plateau = TrainConfig(dataset_uri="d", lr_schedule="plateau")
    given = TrainConfig(dataset_uri="d", patience=2)
    assert (cosine.to_dict()["patience"], plateau.to_dict()["patience"]) == (0, DEFAULT_PATIENCE)

    def early_stopping(config: TrainConfig, phase: str) -> int | None:
        splits = {"train": SimpleNamespace(count=10)}
        ctx = SimpleNamespace(
            config=config, history={"phase": []}, manifest=SimpleNamespace(splits=splits)
        )
        _, resumables, _ = phase_callbacks(ctx, phase, 1e-3, RunFlags())
        stopper = resumables.get("early_stopping")
        return None if stopper is None else stopper.patience

    assert early_stopping(cosine, "head") is None
    assert early_stopping(cosine, "fine_tune") == DEFAULT_PATIENCE  # phase two: plateau
    assert early_stopping(plateau, "head") == DEFAULT_PATIENCE
    assert early_stopping(given, "head") == early_stopping(given, "fine_tune") == 2
    assert early_stopping(TrainConfig(dataset_uri="d", patience=0), "fine_tune") is None


def test_mirror_follows_the_model_unless_given():
    cnn = TrainConfig(dataset_uri="d")
    inception = TrainConfig(dataset_uri="d", model="inception_v3")
    assert cnn.resolved_mirror and cnn.to_dict()["mirror"] == "on"
    assert not inception.resolved_mirror and inception.to_dict()["mirror"] == "off"
    off = TrainConfig(dataset_uri="d", mirror="off")
    assert not off.resolved_mirror and off.to_dict()["mirror"] == "off"
    assert TrainConfig(dataset_uri="d", model="inception_v3", mirror="on").resolved_mirror
    # It changes what is trained, so a checkpoint of one is not resumed by the other.
    assert (
        checkpoint_key(off)
        != checkpoint_key(cnn)
        == checkpoint_key(TrainConfig(dataset_uri="d", mirror="on"))
    )
    with pytest.raises(ConfigError, match="mirror must be on, off or empty"):
        TrainConfig(dataset_uri="d", mirror="yes")


def test_mirror_averaged_model_predicts_the_mean_over_an_image_and_its_mirror_image(tmp_path):
    import keras

    net = build_seed_cnn((12, 10, 1), 4, 16, seed=5, mirror=True)
    assert "mirror" in [layer.name for layer in net.layers]
    images = np.random.default_rng(0).integers(0, 256, (6, 12, 10, 1), dtype=np.uint8)
    mirrored = images[:, :, ::-1]
    plain = net.predict(images, verbose=0)
    # The random flip acts in training only: inference is deterministic.
    np.testing.assert_array_equal(net.predict(images, verbose=0), plain)
    averaged = mirror_averaged(net)
    expected = (plain + net.predict(mirrored, verbose=0)) / 2
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(averaged.predict(mirrored, verbose=0), expected, atol=1e-6)
    assert not np.allclose(plain, expected, atol=1e-6)  # the mirror image does count
    # Shared weights, not copies; saved and loaded with stock Keras only.
    assert averaged.count_params() == net.count_params()
    averaged.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
