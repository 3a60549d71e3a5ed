"""Write the step's outputs: model.keras, saved_model/, metrics, history, misclassified, config.

Everything is written into a staging folder next to the outputs and moved into place at the end,
metrics.json last, so a reader never sees half a result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from components.common.dataset import Manifest
from components.common.lineage import lineage
from components.common.result import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    SAVED_MODEL_DIR,
    TestPredictions,
    TrainingMetrics,
    arm_of,
)
from components.training.config import TrainConfig
from components.training.data import test_split_sha256
from components.training.evaluate import TEST_LABELS, TEST_PREDICTIONS, Evaluation

ORDER = (MODEL_FILE, SAVED_MODEL_DIR, HISTORY_FILE, MISCLASSIFIED_FILE, CONFIG_FILE)
OPTIONAL = (PREDICTIONS_FILE,)


def record(
    config: TrainConfig,
    manifest: Manifest,
    history: dict,
    model,
    scores: Evaluation,
    *,
    weights_sha256: str | None,
    feature_seconds: float,
    resumed: bool,
) -> TrainingMetrics:
    """The run's metrics.json record: test scores, speed, sizes, data and code lineage."""
    epoch_seconds = sum(history["epoch_seconds"])
    trained_images = manifest.splits["train"].count * len(history["epoch"])
    pretrained = weights_sha256 is not None
    display_name = config.spec.display_name
    if config.spec.is_transfer and pretrained:
        display_name += " (pretrained)"
    elif config.spec.is_transfer:
        # The same architecture trained end to end: not a transfer model.
        display_name = f"{config.spec.backbone.keras_class} (from scratch)"
    return TrainingMetrics(
        model=config.model,
        display_name=display_name,
        pretrained=pretrained,
        arm=str(arm_of(config.model, pretrained)),
        weights_sha256=weights_sha256,
        dataset_uri=config.dataset_uri,
        dataset_version=manifest.version,
        test_split_sha256=test_split_sha256(manifest),
        class_names=tuple(manifest.class_names),
        test_accuracy=scores.accuracy,
        test_loss=scores.loss,
        train_seconds=round(epoch_seconds + feature_seconds, 3),
        feature_seconds=round(feature_seconds, 3),
        images_per_second=round(trained_images / epoch_seconds, 2) if epoch_seconds else None,
        params_total=int(model.count_params()),
        params_trainable=int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        epochs_run=len(history["epoch"]),
        input_size=config.resolved_input_size,
        mirror_averaged=config.resolved_mirror,
        seed=config.seed,
        resumed=resumed,
        checkpoint_dir=config.checkpoint_dir,
        per_class=scores.per_class,
        confusion_matrix=scores.confusion.tolist(),
        lineage=lineage(),
    )


def clean(value):
    """JSON-safe copy: NumPy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export_saved_model(model, path: Path, image_shape: tuple[int, int, int]) -> None:
    """SavedModel whose `serving_default` takes raw uint8 images [batch, H, W, C].

    The endpoint calls the model with training=False: `model.export` calls it without the flag,
    and Keras' random augmentation layers then default to training mode, so a model trained
    with augmentation would serve randomly shifted, zoomed and flipped predictions.
    """
    import keras
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *image_shape], tf.uint8, name="image")]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda image: model(image, training=False), signature)
    archive.write_out(str(path), verbose=False)


def write_all(
    output_dir: str | Path,
    *,
    model,
    image_shape: tuple[int, int, int],
    metrics: TrainingMetrics,
    history: dict,
    misclassified: dict,
    config: dict,
) -> None:
    """Stage every output, then move them into `output_dir` (metrics.json last).

    `misclassified` is `Evaluation.misclassified`: its full test arrays (TEST_PREDICTIONS,
    TEST_LABELS), when present, go to PREDICTIONS_FILE, the rest to MISCLASSIFIED_FILE.
    """

    def dump(name: str, value: dict) -> None:
        (staging / name).write_text(json.dumps(clean(value), indent=2) + "\n")

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".staging-*"):  # left by a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        model.save(staging / MODEL_FILE)
        export_saved_model(model, staging / SAVED_MODEL_DIR, image_shape)
        dump(HISTORY_FILE, history)
        full = {
            key: misclassified[key]
            for key in (TEST_PREDICTIONS, TEST_LABELS)
            if key in misclassified
        }
        wrong = {key: value for key, value in misclassified.items() if key not in full}
        np.savez_compressed(staging / MISCLASSIFIED_FILE, **wrong)
        if len(full) == 2:
            TestPredictions(
                full[TEST_PREDICTIONS], full[TEST_LABELS], metrics.test_split_sha256 or ""
            ).save(staging / PREDICTIONS_FILE)
        dump(CONFIG_FILE, {**config, "lineage": metrics.lineage})
        dump(METRICS_FILE, metrics.to_dict())
        present = [name for name in OPTIONAL if (staging / name).exists()]
        for name in (*ORDER, *present, METRICS_FILE):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
