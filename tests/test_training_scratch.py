"""A backbone trained from scratch: every layer trains, BatchNorm statistics fit the weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.common.config import ConfigError
from components.common.dataset import load_manifest
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from components.training import data
from components.training.batchnorm import SAMPLE_IMAGES, Reestimator, batchnorm_layers
from components.training.config import TrainConfig
from components.training.train import run
from tests.conftest import make_idx_dataset

# A ResNet50V2 cut after its first stage: the whole architecture's kinds of layers, fast.
SCRATCH = {"model": "resnet50_v2", "input_size": 32, "cut_layer": "conv2_block3_out"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """A prepared tiny learnable dataset: 8x8 grayscale, 4 classes, 180/20/60 images."""
    root = tmp_path_factory.mktemp("scratch-data")
    source = make_idx_dataset(root / "idx", n_train=200, n_test=60, classes=4)
    return prep(PrepConfig(store=str(root / "store"), source=str(source))).uri


def config(dataset: str, tmp_path: Path, **overrides) -> TrainConfig:
    values = {
        "dataset_uri": dataset,
        "output_dir": str(tmp_path / "out"),
        "epochs": 2,
        "batch_size": 16,
        "patience": 0,
        "cache_dir": str(tmp_path / "cache"),
        "seed": 3,
        **SCRATCH,
    }
    values.update(overrides)
    return TrainConfig(**values)


def test_reestimated_statistics_are_the_population_statistics_in_training_mode():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    first = keras.layers.Conv2D(3, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(first)
    hidden = keras.layers.ReLU()(x)
    second = keras.layers.Conv2D(4, 2, name="conv_b")(hidden)
    x = keras.layers.BatchNormalization(name="bn_b")(second)
    model = keras.Model(inputs, x)
    images = np.random.default_rng(1).normal(2.0, 3.0, (23, 6, 6, 2)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((images, np.zeros(23))).batch(5)  # 5,5,5,5,3

    # What each BatchNorm sees in training: conv_a's outputs; conv_b's outputs after bn_a
    # normalised each batch by that batch's own statistics.
    to_first = keras.Model(inputs, first)
    to_second = keras.Model(inputs, second)
    seen_a = to_first(images).numpy().reshape(-1, 3)
    seen_b = np.concatenate(
        [to_second(b, training=True).numpy().reshape(-1, 4) for b, _ in batches]
    )
    assert Reestimator(model)(batches) == 23
    for name, seen in (("bn_a", seen_a), ("bn_b", seen_b)):
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), seen.mean(axis=0), rtol=1e-4)
        np.testing.assert_allclose(layer.moving_variance.numpy(), seen.var(axis=0), rtol=1e-3)
        assert layer.momentum == 0.99  # put back for training and the saved model
    assert [layer.name for layer in batchnorm_layers(keras.Sequential([model]))] == ["bn_a", "bn_b"]


def test_scratch_builder_trains_every_layer_and_frozen_builder_none():
    from components.training.models import build_transfer

    shape, model = (8, 8, 1), "resnet50_v2"
    cut = SCRATCH["cut_layer"]
    scratch = build_transfer(shape, 4, 32, None, cut, model=model, scratch=True)
    frozen = build_transfer(shape, 4, 32, None, cut, model=model)
    assert scratch.scratch and all(layer.trainable for layer in scratch.backbone.layers)
    assert not frozen.scratch and not frozen.backbone.trainable
    images = np.random.default_rng(0).integers(0, 255, (6, *shape), dtype=np.uint8)
    # BatchNorm follows the training flag from scratch, and stays in inference mode when frozen.
    for built, differs in ((scratch, True), (frozen, False)):
        trained = built.features(images, training=True).numpy()
        inferred = built.features(images, training=False).numpy()
        assert (not np.allclose(trained, inferred, atol=1e-4)) is differs
    with pytest.raises(ConfigError, match="takes no pretrained weights"):
        build_transfer(shape, 4, 32, "w.weights.h5", cut, model=model, scratch=True)


@pytest.mark.slow
def test_backbone_without_weights_trains_every_layer_and_fits_its_statistics(
    dataset, tmp_path, capsys
):
    import keras

    # fine_tune_from means nothing from scratch (every layer trains): ignored, with a log line.
    result = run(config(dataset, tmp_path, fine_tune_from="conv1_conv", fine_tune_epochs=1))
    logged = capsys.readouterr().out
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert "fine_tune_ignored" in logged and history["phase"] == ["head", "head"]
    assert metrics["arm"] == "scratch" and metrics["pretrained"] is False
    assert not result.pretrained and metrics["weights_sha256"] is None
    assert metrics["display_name"] == "ResNet50V2 (from scratch)"
    assert metrics["feature_seconds"] == 0 and not (tmp_path / "cache" / "features").exists()
    assert json.loads((out / "config.json").read_text())["scratch"] is True
    # Inference-mode accuracy on a learnable task, well above chance (0.25).
    assert metrics["test_accuracy"] >= 0.6

    saved = keras.models.load_model(out / "model.keras")
    backbone = saved.get_layer("resnet50v2_to_conv2_block3_out")
    norms = batchnorm_layers(backbone)
    assert norms and all(layer.trainable for layer in backbone.layers)
    # Every weight trains but BatchNorm's moving statistics (and the random-generator states).
    moving = sum(int(np.prod(v.shape)) for bn in norms for v in bn.non_trainable_weights)
    assert metrics["params_trainable"] == metrics["params_total"] - moving
    # The saved statistics are those of the weights: re-estimated from the training images.
    saved_stats = [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in norms]
    assert not np.allclose(saved_stats[0][1], 1.0)  # not Keras' initial variance
    # The exported graph's preprocessing (no augmentation here) and backbone, for the pass.
    image = keras.Input(saved.input.shape[1:], dtype="uint8")
    x = saved.get_layer("resize")(saved.get_layer("scale")(image))
    features = keras.Model(image, backbone(saved.get_layer("gray_to_rgb")([x, x, x])))
    splits = data.load_splits(dataset, load_manifest(dataset), tmp_path / "again")
    sample = data.batched(splits["train"].take(SAMPLE_IMAGES), 16)
    Reestimator(features)(sample)
    for bn, (mean, variance) in zip(norms, saved_stats, strict=True):
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "seed_cnn", "scratch": True}, "seed_cnn has no backbone"),
        ({"scratch": True, "weights_uri": "w.weights.h5"}, "leave weights_uri empty"),
        ({"fine_tune_epochs": 2}, "fine_tune_epochs needs fine_tune_from"),
    ],
)
def test_scratch_options_that_contradict_each_other_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(dataset_uri="d", **{**SCRATCH, **overrides})


def test_no_weights_means_scratch_and_fine_tuning_is_off():
    for model in ("inception_v3", "resnet50_v2"):
        plain = TrainConfig(dataset_uri="d", model=model)
        assert plain.from_scratch and plain.to_dict()["scratch"] is True
        tuned = TrainConfig(dataset_uri="d", model=model, fine_tune_from="x", fine_tune_epochs=2)
        assert not tuned.fine_tunes
    pretrained = TrainConfig(dataset_uri="d", model="resnet50_v2", weights_uri="w.weights.h5")
    assert not pretrained.from_scratch and pretrained.to_dict()["scratch"] is False
    assert not TrainConfig(dataset_uri="d").from_scratch  # the seed CNN is its own arm


class Killed(Exception):
    """Stands for a kill right after a checkpoint upload."""


@pytest.mark.slow
def test_scratch_run_killed_after_a_checkpoint_resumes_to_the_same_result(
    dataset, tmp_path, monkeypatch
):
    import keras

    from components.training import checkpoint

    whole = run(config(dataset, tmp_path / "whole", epochs=3, cache_dir=str(tmp_path / "c1")))
    checkpoints = str(tmp_path / "checkpoints")
    original = checkpoint.StoreCheckpoint.push

    def push_then_die(self, done=False):
        original(self, done)
        if self.epoch == 1:
            raise Killed

    monkeypatch.setattr(checkpoint.StoreCheckpoint, "push", push_then_die)
    resumed_config = config(
        dataset, tmp_path / "resumed", epochs=3, checkpoint_dir=checkpoints,
        cache_dir=str(tmp_path / "c2"),
    )  # fmt: skip
    with pytest.raises(Killed):
        run(resumed_config)
    monkeypatch.setattr(checkpoint.StoreCheckpoint, "push", original)
    resumed = run(resumed_config)

    assert resumed.resumed and resumed.epochs_run == whole.epochs_run == 3
    assert resumed.test_accuracy == whole.test_accuracy
    assert resumed.test_loss == pytest.approx(whole.test_loss, rel=1e-5)
    models = [keras.models.load_model(tmp_path / name / "out" / "model.keras")
              for name in ("whole", "resumed")]  # fmt: skip
    stats = [
        [np.asarray(v) for bn in batchnorm_layers(m) for v in bn.non_trainable_weights]
        for m in models
    ]
    assert len(stats[0]) == len(stats[1]) > 0
    for a, b in zip(*stats, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_component_in_a_scratch_volume_trains_with_its_weights(tmp_path, monkeypatch):
    """The scratch volume's path (TL_SCRATCH_DIR) is not the `scratch` option."""
    import tempfile

    from components.common.dataset import DataError
    from components.training import component

    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # restored after the test
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(component.SCRATCH_ENV, str(volume))
    for model, weights in (("seed_cnn", ""), ("resnet50_v2", "w.weights.h5")):
        # The config is valid; the run stops only at the missing dataset.
        with pytest.raises(DataError, match="no-dataset"):
            component.train(
                None, None, None, None, dataset_uri=str(tmp_path / "no-dataset"),
                store=str(tmp_path), model=model, weights_uri=weights,
            )  # fmt: skip
