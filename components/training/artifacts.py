"""The training step's KFP artifacts: parameters -> TrainConfig, the output folder -> artifacts.

Training takes the dataset and the weights as content-addressed URIs (parameters), so its KFP
cache key follows their content; its checkpoints go to a folder named by a hash of the
parameters that define the result, so a retried task (same inputs) resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.common import storage
from components.common.artifacts import copy_file, copy_tree, log_metrics
from components.common.digest import json_digest
from components.common.result import HISTORY_FILE, METRICS_FILE, TrainingMetrics
from components.training.config import TrainConfig

# Parameters that define a run's result; their hash names the checkpoint folder.
CHECKPOINT_KEYS = (
    "dataset_uri",
    "model",
    "weights_uri",
    "scratch",
    "input_size",
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "lr_schedule",
    "label_smoothing",
    "augmentation",
    "mirror",
    "cut_layer",
    "fine_tune_from",
    "fine_tune_epochs",
    "fine_tune_learning_rate",
    "seed",
)


def checkpoint_key(config: TrainConfig) -> str:
    """A hash of the resolved parameters that define the result (defaults filled in)."""
    values = config.to_dict()
    return json_digest({name: values[name] for name in CHECKPOINT_KEYS})[:16]


def config(*, work: Path, store: str, **params: Any) -> TrainConfig:
    """One task's TrainConfig: outputs in `work/output`, checkpoints and features in `store`."""
    draft = TrainConfig(**params)
    return TrainConfig(
        **params,
        output_dir=str(work / "output"),
        cache_dir=str(work / "cache"),
        feature_store=store,
        checkpoint_dir=storage.join(store, "checkpoints", checkpoint_key(draft), draft.model),
    )


def publish(output_dir: Path, *, model, metrics, classification, history) -> TrainingMetrics:
    """Publish a training output folder: Model folder, Metrics, ClassificationMetrics, history."""
    path = output_dir / METRICS_FILE
    record = TrainingMetrics.from_dict(json.loads(path.read_text()), str(path))
    copy_tree(output_dir, model)
    model.metadata.update(record.model_metadata())
    log_metrics(metrics, record.to_dict())
    if record.confusion_matrix:
        matrix = [[int(cell) for cell in row] for row in record.confusion_matrix]
        classification.log_confusion_matrix(list(record.class_names), matrix)
    copy_file(output_dir / HISTORY_FILE, history)
    return record
