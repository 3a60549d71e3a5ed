"""Training step: both models train and evaluate, outputs, feature cache, exports, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from components.common import storage
from components.common.dataset import DataError, load_manifest
from components.common.digest import file_digest
from components.common.result import PREDICTIONS_FILE, TestPredictions
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from components.training import features
from components.training.callbacks import NaNGuard, StopAtAccuracy, TrainingDivergedError
from components.training.checkpoint import RunFlags
from components.training.config import TrainConfig
from components.training.evaluate import scores
from components.training.models import MODELS, build_seed_cnn, build_transfer
from components.training.train import run
from tests.conftest import make_idx_dataset

TRANSFER = {"model": "inception_v3", "input_size": 75, "cut_layer": "mixed0"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """A prepared tiny dataset: 8x8 grayscale, 10 classes, 108/12/40 images."""
    root = tmp_path_factory.mktemp("training-data")
    source = make_idx_dataset(root / "idx", n_train=120, n_test=40)
    return prep(PrepConfig(store=str(root / "store"), source=str(source))).uri


def config(dataset: str, tmp_path: Path, **overrides) -> TrainConfig:
    values = {
        "dataset_uri": dataset,
        "output_dir": str(tmp_path / "out"),
        "input_size": 16,
        "epochs": 1,
        "batch_size": 16,
        "cache_dir": str(tmp_path / "cache"),
        "seed": 3,
    }
    values.update(overrides)
    return TrainConfig(**values)


def serve(saved_model: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    outputs = loaded.signatures["serving_default"](image=tf.constant(images))
    return next(iter(outputs.values())).numpy()


def test_seed_cnn_trains_evaluates_and_writes_every_output(dataset, tmp_path):
    import keras

    result = run(config(dataset, tmp_path, epochs=2, patience=0))
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    manifest = load_manifest(dataset)
    assert result.epochs_run == metrics["epochs_run"] == 2
    assert metrics["model"] == "seed_cnn" and metrics["pretrained"] is False
    assert metrics["class_names"] == list(manifest.class_names)
    assert metrics["dataset_version"] == manifest.version and metrics["seed"] == 3
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and math.isfinite(metrics["test_loss"])
    confusion = np.asarray(metrics["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == manifest.splits["test"].count
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["test_accuracy"])
    assert sum(c["support"] for c in metrics["per_class"].values()) == confusion.sum()
    assert metrics["params_trainable"] == metrics["params_total"] > 0
    assert history["epoch"] == [1, 2] and history["phase"] == ["head", "head"]
    assert {len(values) for values in history.values()} == {2}
    assert all(v > 0 for v in history["images_per_second"])
    wrong = np.load(out / "misclassified.npz")
    assert wrong["images"].dtype == np.uint8 and wrong["images"].shape[1:] == (8, 8, 1)
    assert len(wrong["labels"]) == min(36, confusion.sum() - np.trace(confusion))
    assert np.all(wrong["labels"] != wrong["predictions"])
    saved_config = json.loads((out / "config.json").read_text())
    assert saved_config["input_size"] == 16
    assert saved_config["label_smoothing"] == MODELS["seed_cnn"].default_label_smoothing > 0
    assert saved_config["mirror"] == "on" and metrics["mirror_averaged"] is True  # CNN default
    # Every test image's prediction, paired with its label, for compare's statistics.
    paired = TestPredictions.load(out / PREDICTIONS_FILE, 10, metrics["test_split_sha256"])
    assert paired.predictions.dtype == paired.labels.dtype == np.int64
    assert len(paired.labels) == confusion.sum()
    assert np.mean(paired.predictions == paired.labels) == pytest.approx(metrics["test_accuracy"])
    recount = np.zeros((10, 10), int)
    np.add.at(recount, (paired.labels, paired.predictions), 1)
    assert recount.tolist() == confusion.tolist()
    assert "test_predictions" not in np.load(out / "misclassified.npz")
    assert not list(out.glob(".staging-*"))
    # The exported SavedModel takes raw uint8 images and agrees with the Keras model.
    images = (wrong["images"] if len(wrong["images"]) else np.zeros((2, 8, 8, 1), np.uint8))[:4]
    model = keras.models.load_model(out / "model.keras")
    # Trained with label smoothing, exported with the plain loss: loads in any Keras.
    assert model.loss == "sparse_categorical_crossentropy"
    steps = -(-manifest.splits["train"].count // 16)  # batch_size 16
    assert int(model.optimizer.iterations) == 2 * steps  # the optimizer and its state are kept
    expected = model.predict(images, verbose=0)
    # Trained with random flips, evaluated and exported mirror-averaged: the mirror image of a
    # test image gets the same prediction.
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    np.testing.assert_allclose(model.predict(mirrored, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(serve(out / "saved_model", mirrored), expected, atol=1e-5)
    served = serve(out / "saved_model", images)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert served.shape == (len(images), 10)


@pytest.mark.slow
def test_transfer_trains_on_cached_features_and_exports(tmp_path, inception_weights, gcs_bucket):
    # Dataset and weights both come from a gs:// store (the GCS emulator).
    source = make_idx_dataset(tmp_path / "idx", n_train=60, n_test=20)
    dataset = prep(PrepConfig(store=gcs_bucket, source=str(source))).uri
    weights = f"{gcs_bucket}/weights/abc/inception_v3_notop.weights.h5"
    storage.upload_file(inception_weights, weights)
    # Label smoothing on: the head trains on features, and the full model is saved with the
    # plain loss although it was never compiled itself.
    result = run(config(dataset, tmp_path, weights_uri=weights, label_smoothing=0.1, **TRANSFER))
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert result.pretrained and metrics["pretrained"] is True
    assert json.loads((out / "config.json").read_text())["label_smoothing"] == 0.1
    assert metrics["weights_sha256"] == file_digest(inception_weights)
    assert metrics["dataset_uri"].startswith("gs://")
    assert metrics["feature_seconds"] > 0  # the head trained on cached features
    assert metrics["params_trainable"] < metrics["params_total"]  # backbone frozen
    assert metrics["epochs_run"] == 1 and metrics["input_size"] == 75
    assert list((tmp_path / "cache" / "features").glob("*/train.bin"))
    raw = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 1), dtype=np.uint8)
    probabilities = serve(out / "saved_model", raw)
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_cached_features_give_the_same_predictions_as_the_full_model(tmp_path):
    import tensorflow as tf

    built = build_transfer((8, 8, 1), 10, 75, None, cut_layer="mixed0", seed=1)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (20, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(20) % 10
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)
    feature_file = features.extract(built.features, batches, tmp_path, "test", "float32")
    streamed = features.feature_dataset(feature_file, 6)
    via_features = np.concatenate([built.head(f, training=False).numpy() for f, _ in streamed])
    via_full = built.full(images, training=False).numpy()
    np.testing.assert_allclose(via_features, via_full, rtol=1e-4, atol=1e-5)
    assert np.array_equal(feature_file.labels, labels)


def test_models_build_with_the_right_shapes_and_no_nans():
    cnn = build_seed_cnn((28, 28, 1), 10, 56)
    out = cnn(np.zeros((2, 28, 28, 1), np.uint8)).numpy()
    assert out.shape == (2, 10) and np.all(np.isfinite(out))
    names = [layer.name for layer in cnn.layers]
    assert [cnn.get_layer(f"conv{i}").filters for i in (1, 2, 3)] == [32, 32, 64]
    assert cnn.get_layer("conv1").kernel_size == (2, 2) and "dense_hidden" in names
    assert cnn.get_layer("dense_hidden").units == 1024
    assert cnn.get_layer("dropout").rate == pytest.approx(0.2)
    augmented = build_seed_cnn((28, 28, 1), 10, 28, augmentation=1.0)
    assert "augment" in [layer.name for layer in augmented.layers]


def test_the_exported_model_serves_without_augmentation(tmp_path):
    # Keras' random layers default to training=True when called without a flag, as the
    # export traces them; the SavedModel must predict as the Keras model does, every time.
    from components.training.outputs import export_saved_model

    model = build_seed_cnn((28, 28, 1), 10, 28, augmentation=2.0, seed=1)
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    export_saved_model(model, tmp_path / "saved_model", (28, 28, 1))
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(serve(tmp_path / "saved_model", images), expected, atol=1e-5)
    np.testing.assert_allclose(serve(tmp_path / "saved_model", images), expected, atol=1e-5)


def test_scores_per_class_and_confusion():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    labels = np.array([0, 1, 1, 1])
    images = np.zeros((4, 2, 2, 1), np.uint8)
    result = scores(probs, labels, images, ("a", "b"))
    assert result.accuracy == pytest.approx(0.75)
    assert result.confusion.tolist() == [[1, 0], [1, 2]]
    assert result.per_class["a"]["precision"] == pytest.approx(0.5)
    assert result.per_class["b"]["recall"] == pytest.approx(2 / 3)
    assert result.per_class["b"]["f1"] == pytest.approx(0.8)
    assert result.misclassified["labels"].tolist() == [1]
    assert result.predictions.tolist() == [0, 1, 0, 1] and result.labels.tolist() == [0, 1, 1, 1]
    expected_loss = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_stop_at_accuracy_reads_accuracy_and_legacy_acc():
    class Model:
        stop_training = False

    for logs in ({"accuracy": 0.99}, {"acc": 0.99}):
        callback = StopAtAccuracy(0.98)
        callback.set_model(Model())
        callback.on_epoch_end(0, logs)
        assert callback.model.stop_training
    callback = StopAtAccuracy(0.98)
    callback.set_model(Model())
    callback.on_epoch_end(0, {"accuracy": 0.5})
    assert not callback.model.stop_training


def test_nan_loss_stops_and_fails_clearly():
    class Model:
        stop_training = False

    flags = RunFlags()
    guard = NaNGuard(flags)
    guard.set_model(Model())
    guard.on_epoch_begin(2)
    guard.on_batch_end(7, {"loss": float("nan")})
    assert guard.model.stop_training and flags.diverged
    with pytest.raises(TrainingDivergedError, match="epoch 3, batch 7"):
        guard.check(0.1)


# --- bad input ---------------------------------------------------------------------------


def test_dataset_without_manifest_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no manifest"):
        run(config(str(tmp_path / "empty"), tmp_path))


def test_shard_with_wrong_hash_is_refused(tmp_path):
    source = make_idx_dataset(tmp_path / "idx", n_train=40, n_test=20)
    uri = prep(PrepConfig(store=str(tmp_path / "store"), source=str(source))).uri
    shard = next(Path(uri).glob("test-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataError, match=f"{shard.name}.*sha256"):
        run(config(uri, tmp_path))
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_empty_split_is_refused(tmp_path):
    source = make_idx_dataset(tmp_path / "idx", n_train=40, n_test=20)
    uri = prep(PrepConfig(store=str(tmp_path / "store"), source=str(source), val_fraction=0)).uri
    with pytest.raises(DataError, match="'validation' split is empty"):
        run(config(uri, tmp_path))


def test_class_count_mismatch_is_refused(dataset, tmp_path):
    with pytest.raises(DataError, match="10 classes but the model was configured for 5"):
        run(config(dataset, tmp_path, num_classes=5))


def test_input_size_below_backbone_minimum_is_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match="below inception_v3's minimum of 75"):
        config(dataset, tmp_path, model="inception_v3", input_size=74)


def test_weights_that_do_not_fit_the_backbone_name_the_layer(dataset, tmp_path):
    import keras

    other = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="odd_dense")]).save_weights(
        str(other)
    )
    with pytest.raises(DataError, match=r"other\.weights\.h5: weights do not fit InceptionV3"):
        run(config(dataset, tmp_path, weights_uri=str(other), **TRANSFER))
    with pytest.raises(DataError, match="weights file not found"):
        run(config(dataset, tmp_path, weights_uri=str(tmp_path / "missing.h5"), **TRANSFER))


@pytest.mark.slow
def test_transfer_fine_tunes_after_the_head_phase(dataset, tmp_path, inception_weights):
    result = run(
        config(
            dataset,
            tmp_path,
            model="inception_v3",
            weights_uri=inception_weights,
            input_size=75,
            cut_layer="mixed1",
            fine_tune_from="mixed0",
            fine_tune_epochs=1,
            checkpoint_dir=str(tmp_path / "checkpoints"),
        )
    )
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    metrics = result.metrics
    assert history["phase"] == ["head", "fine_tune"] and history["epoch"] == [1, 2]
    assert metrics["pretrained"] is True and metrics["display_name"].endswith("(pretrained)")
    assert metrics["feature_seconds"] > 0  # head phase on features, fine-tuning end to end
    assert metrics["params_trainable"] < metrics["params_total"]
    # Kept, both phases marked done, until the consumer releases it (common.checkpoints).
    for phase in ("head", "fine_tune"):
        pointer = json.loads((tmp_path / "checkpoints" / phase / "LATEST.json").read_text())
        assert pointer["done"]
    assert metrics["checkpoint_dir"] == str(tmp_path / "checkpoints")
    # The fine-tune checkpoint is lean: trainable weights and optimizer state, no frozen layers.
    fine = json.loads((tmp_path / "checkpoints" / "fine_tune" / "LATEST.json").read_text())
    assert "latest.lean.npz" in fine["files"] and "latest.weights.h5" not in fine["files"]


def test_lean_checkpoint_restores_what_training_changed_and_refuses_another_model(tmp_path):
    import keras

    from components.training.checkpoint import LEAN_FILE, lean_variables, load_lean, save_lean

    def model(seed: int, units: int = 3):
        keras.utils.set_random_seed(seed)
        frozen = keras.layers.Dense(5, name="frozen")
        built = keras.Sequential(
            [keras.Input((4,)), frozen, keras.layers.Dropout(0.5), keras.layers.Dense(units)]
        )
        frozen.trainable = False
        built.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return built

    data = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
    trained = model(seed=1)
    trained.fit(*data, epochs=2, verbose=0)
    save_lean(trained, tmp_path / LEAN_FILE)
    saved_paths = list(np.load(tmp_path / LEAN_FILE)["paths"])
    assert not [p for p in saved_paths if "/frozen/" in p]  # rebuilt, not saved
    assert any(p.startswith("sequential") and "/frozen/" not in p for p in saved_paths)
    assert any("seed_generator" in p for p in saved_paths)
    assert any(p.endswith("/iteration") for p in saved_paths)
    fresh = model(seed=1)  # the same frozen layer (from the weights file, in training)
    fresh.optimizer.build(fresh.trainable_variables)
    load_lean(fresh, tmp_path / LEAN_FILE)
    for a, b in zip(trained.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(lean_variables(trained), lean_variables(fresh), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = model(seed=1, units=4)
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(DataError, match="shape"):
        load_lean(other, tmp_path / LEAN_FILE)


def test_rerun_after_a_crash_past_training_skips_the_finished_phase(dataset, tmp_path, monkeypatch):
    from components.training import outputs

    checkpoints = str(tmp_path / "checkpoints")
    original = outputs.write_all

    def crash(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(outputs, "write_all", crash)
    with pytest.raises(OSError, match="disk went away"):
        run(config(dataset, tmp_path, epochs=2, patience=0, checkpoint_dir=checkpoints))
    pointer = json.loads((Path(checkpoints) / "head" / "LATEST.json").read_text())
    assert pointer["done"] and pointer["epoch"] == 2
    monkeypatch.setattr(outputs, "write_all", original)
    result = run(config(dataset, tmp_path, epochs=2, patience=0, checkpoint_dir=checkpoints))
    assert result.resumed and result.epochs_run == 2
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    assert json.loads((Path(checkpoints) / "head" / "LATEST.json").read_text())["done"]


def test_rerun_after_the_outputs_were_written_trains_no_epoch(dataset, tmp_path, capsys):
    """A kill after training wrote its outputs (before the orchestrator uploaded them)."""
    checkpoints = str(tmp_path / "checkpoints")
    first = run(config(dataset, tmp_path, epochs=2, patience=0, checkpoint_dir=checkpoints))
    capsys.readouterr()
    again = run(config(dataset, tmp_path, epochs=2, patience=0, checkpoint_dir=checkpoints))
    logged = capsys.readouterr().out
    assert "epoch_end" not in logged and "phase_already_done" in logged
    assert again.resumed and again.epochs_run == 2
    assert again.test_accuracy == first.test_accuracy and again.test_loss == first.test_loss


def test_checkpoint_of_another_configuration_is_refused(dataset, tmp_path):
    head = tmp_path / "checkpoints" / "head"
    head.mkdir(parents=True)
    (head / "LATEST.json").write_text(
        json.dumps({"epoch": 1, "folder": "state-0001-x", "files": [], "done": False,
                    "extra": {"model": "seed_cnn", "num_classes": 5}})
    )  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint was made with num_classes=5"):
        run(config(dataset, tmp_path, checkpoint_dir=str(tmp_path / "checkpoints")))


def test_diverged_training_saves_no_checkpoint(dataset, tmp_path):
    # A learning rate this large sends the loss to inf/NaN in the first epoch.
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(TrainingDivergedError):
        run(
            config(dataset, tmp_path, learning_rate=1e12, epochs=3, checkpoint_dir=str(checkpoints))
        )
    assert not list(checkpoints.rglob("*.weights.h5"))  # no retry resumes from NaN weights


def test_unknown_fine_tune_layer_is_refused_before_training(dataset, tmp_path, inception_weights):
    with pytest.raises(ValueError, match="cut at mixed1 has no layer 'mixed5'"):
        run(
            config(
                dataset,
                tmp_path,
                model="inception_v3",
                weights_uri=inception_weights,
                input_size=75,
                cut_layer="mixed1",
                fine_tune_from="mixed5",
                fine_tune_epochs=1,
            )
        )
    assert not (tmp_path / "out" / "history.json").exists()


@pytest.mark.slow
def test_resnet50_v2_entry_matches_keras_and_trains_from_generated_weights(dataset, tmp_path):
    """The registry's ResNet50V2 entry: Keras' published file and hash, its cut, its scaling."""
    import keras
    from keras.src.applications import resnet

    from components.common.backbones import BACKBONES

    entry = BACKBONES["resnet50_v2"]
    assert entry.weights_url == resnet.BASE_WEIGHTS_PATH + entry.weights_filename
    assert entry.weights_md5 == resnet.WEIGHTS_HASHES["resnet50v2"][1]
    pixels = np.array([0.0, 127.5, 255.0])
    scaled = keras.applications.resnet_v2.preprocess_input(pixels.reshape(1, 1, 3).copy())
    np.testing.assert_allclose(pixels * entry.scale + entry.offset, scaled.ravel(), atol=1e-6)
    # Generated weights stand in for the ImageNet file (no network here).
    weights = tmp_path / "resnet50v2_notop.weights.h5"
    keras.applications.ResNet50V2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(str(weights))
    result = run(
        config(dataset, tmp_path, model="resnet50_v2", input_size=32, weights_uri=str(weights))
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert result.pretrained and metrics["model"] == "resnet50_v2"
    assert metrics["display_name"] == "ResNet50V2 transfer (pretrained)"
    assert metrics["input_size"] == 32 and metrics["params_trainable"] < metrics["params_total"]
    saved = keras.models.load_model(tmp_path / "out" / "model.keras")
    assert any(layer.name == "resnet50v2_to_post_relu" for layer in saved.layers)
