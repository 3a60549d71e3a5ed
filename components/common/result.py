"""The contract between training and compare: a run folder's files and its metrics record.

A training run's output folder holds:

    model.keras  saved_model/  history.json  misclassified.npz  config.json
    test_predictions.npz   every test image's predicted and true label (paired statistics)
    metrics.json   written last: the `TrainingMetrics` record

Training writes `TrainingMetrics.to_json()`; compare reads it with `TrainingMetrics.from_dict`,
which turns missing, null or non-finite numbers into None (the report shows them as such).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.common.dataset import DataError
from components.common.lineage import as_metadata
from components.common.numbers import finite_or_none

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
MISCLASSIFIED_FILE = "misclassified.npz"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
PREDICTIONS_FILE = "test_predictions.npz"


class Role(enum.StrEnum):
    """The two sides of the comparison."""

    CNN = "cnn"
    TRANSFER = "transfer"


class Arm(enum.StrEnum):
    """What a training run is, for the comparison: its arm of the experiment."""

    CNN = "cnn"  # the small CNN trained from scratch
    SCRATCH = "scratch"  # a backbone's architecture trained from random initialisation
    PRETRAINED = "pretrained"  # a backbone with pretrained weights and a trained head


def arm_of(model: str, pretrained: bool) -> Arm:
    """The arm of a run of `model` ("seed_cnn" or a backbone), pretrained or not."""
    if model == "seed_cnn":
        return Arm.CNN
    return Arm.PRETRAINED if pretrained else Arm.SCRATCH


# Numbers of a run that the report, the flat metrics and the champion gate use.
NUMBER_FIELDS = (
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "images_per_second",
    "params_total",
    "params_trainable",
    "epochs_run",
)
# Shown with the Model artifact in the KFP UI.
MODEL_METADATA = (
    "model",
    "display_name",
    "pretrained",
    "arm",
    "weights_sha256",
    "dataset_uri",
    "dataset_version",
    "test_accuracy",
    "input_size",
)


@dataclass(frozen=True)
class TrainingMetrics:
    """One training run's figures, as metrics.json holds them."""

    model: str  # a key of the training step's MODELS, e.g. "seed_cnn"
    display_name: str
    class_names: tuple[str, ...]
    pretrained: bool = False
    arm: str = ""  # an Arm; empty in records written before arms existed (from_dict fills it)
    weights_sha256: str | None = None
    dataset_uri: str | None = None
    dataset_version: str | None = None
    test_split_sha256: str | None = None  # compare refuses runs tested on different splits
    test_accuracy: float | None = None  # None: missing or not finite
    test_loss: float | None = None
    train_seconds: float | None = None  # epoch seconds plus feature extraction
    feature_seconds: float | None = None
    images_per_second: float | None = None  # training images per second of epoch time
    params_total: int | None = None
    params_trainable: int | None = None
    epochs_run: int | None = None
    input_size: Any = None  # pixels (square) the model resizes to
    # The test figures are of predictions averaged over each image and its mirror image (the
    # model trained with random flips; the training step's `mirror`).
    mirror_averaged: bool = False
    seed: int | None = None
    resumed: bool = False
    # Kept until the consumer of this result releases it (common.checkpoints); "" = none.
    checkpoint_dir: str = ""
    per_class: dict[str, Any] = field(default_factory=dict)  # precision, recall, f1, support
    confusion_matrix: list[list[int]] | None = None  # rows true, columns predicted
    lineage: dict[str, Any] = field(default_factory=dict)  # code and library versions

    def numbers(self) -> dict[str, float | None]:
        """NUMBER_FIELDS -> value (None where missing or not finite)."""
        return {name: getattr(self, name) for name in NUMBER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, with the metrics.json keys."""
        values = dataclasses.asdict(self)
        values["class_names"] = list(self.class_names)
        return values

    def to_json(self) -> str:
        """metrics.json text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def model_metadata(self) -> dict[str, Any]:
        """Metadata of the KFP Model artifact: key figures and lineage."""
        values = {key: getattr(self, key) for key in MODEL_METADATA}
        return {**values, "framework": "keras", **as_metadata(self.lineage)}

    @classmethod
    def from_dict(cls, raw: Any, origin: str) -> TrainingMetrics:
        """Read a metrics.json object; `origin` names the file in errors."""
        if not isinstance(raw, dict):
            raise DataError(f"{origin}: expected a JSON object")
        names = raw.get("class_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise DataError(f"{origin}: 'class_names' must be a non-empty list of strings")
        known = {item.name for item in dataclasses.fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        values.update({name: finite_or_none(raw.get(name)) for name in NUMBER_FIELDS})
        return cls(
            **{
                **values,
                "model": str(raw.get("model") or ""),
                "display_name": str(raw.get("display_name") or raw.get("model") or ""),
                "class_names": tuple(names),
                "pretrained": raw.get("pretrained") is True,
                "arm": str(
                    raw.get("arm")
                    or arm_of(str(raw.get("model") or ""), raw.get("pretrained") is True)
                ),
                "resumed": raw.get("resumed") is True,
                "mirror_averaged": raw.get("mirror_averaged") is True,
                "per_class": raw.get("per_class") or {},
                "lineage": raw.get("lineage") or {},
            }
        )


@dataclass(frozen=True)
class TestPredictions:
    """Every test image's predicted and true label, in test-split order (PREDICTIONS_FILE).

    Two runs tested on the same split (`test_split_sha256`) are paired image by image, which is
    what the McNemar test and the paired bootstrap of compare need.
    """

    predictions: np.ndarray  # int64 [N], predicted class index
    labels: np.ndarray  # int64 [N], true class index
    test_split_sha256: str

    def save(self, path: str | Path) -> None:
        """Write the .npz (plain integer and text arrays only: it loads without pickle)."""
        np.savez_compressed(
            path,
            predictions=np.asarray(self.predictions, np.int64),
            labels=np.asarray(self.labels, np.int64),
            test_split_sha256=np.array(self.test_split_sha256 or ""),
        )

    @classmethod
    def load(cls, path: str | Path, num_classes: int, test_split_sha256: str | None):
        """Read and check a PREDICTIONS_FILE; None when it is absent (runs from older versions).

        The arrays must be integer class indices below `num_classes`, of equal length, and the
        file's test split must be `test_split_sha256` (the run's metrics.json); else DataError.
        """
        path = Path(path)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                predictions, labels = data["predictions"], data["labels"]
                split = str(data["test_split_sha256"]) if "test_split_sha256" in data else ""
        except KeyError as error:
            raise DataError(f"{path}: missing array {error}") from None
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable .npz file ({error})") from None
        for name, array in (("predictions", predictions), ("labels", labels)):
            if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                raise DataError(
                    f"{path}: '{name}' must be a 1-D integer array, got {array.dtype} {array.shape}"
                )
            if len(array) and (array.min() < 0 or array.max() >= num_classes):
                raise DataError(
                    f"{path}: '{name}' holds class indices outside 0..{num_classes - 1} "
                    f"({num_classes} classes)"
                )
        if predictions.shape != labels.shape:
            raise DataError(f"{path}: {len(predictions)} predictions for {len(labels)} labels")
        if test_split_sha256 and split != test_split_sha256:
            raise DataError(
                f"{path}: predictions of test split {split[:12] or '(none)'}, but the run's "
                f"{METRICS_FILE} says it was tested on {test_split_sha256[:12]}"
            )
        return cls(predictions.astype(np.int64), labels.astype(np.int64), split)
