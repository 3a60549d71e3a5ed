"""Read and validate what a training step publishes: metrics.json, history.json, misclassified.npz.

Numbers that are missing, null or not finite become `None` here and are reported as such.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.common.dataset import DataError
from components.common.numbers import finite_or_none as number
from components.common.result import (
    HISTORY_FILE,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    NUMBER_FIELDS,
    PREDICTIONS_FILE,
    Role,
    TestPredictions,
    TrainingMetrics,
)

HISTORY_SERIES = ("accuracy", "val_accuracy", "loss", "val_loss", "epoch_seconds")


def missing_text(raw: dict[str, Any], key: str) -> str:
    """How a missing or non-finite metrics.json value is shown (null means not finite)."""
    if key not in raw:
        return "missing"
    if raw[key] is None:
        return "NaN (null)"
    return f"not a number ({raw[key]!r})"


@dataclass(frozen=True)
class History:
    """Per-epoch series of one training run; missing values are NaN."""

    epoch: list[int]
    phase: list[str]
    series: dict[str, np.ndarray]  # name -> float array, same length as `epoch`

    def get(self, name: str) -> np.ndarray:
        """A series by name (all NaN when the run did not record it)."""
        return self.series.get(name, np.full(len(self.epoch), np.nan))


@dataclass(frozen=True)
class Misclassified:
    """Wrong test predictions: uint8 images [N, H, W, C] and their labels."""

    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray


@dataclass(frozen=True)
class RunOutputs:
    """One training run's published outputs, validated."""

    role: Role
    folder: str
    metrics: TrainingMetrics  # metrics.json as read
    missing: dict[str, str]  # NUMBER_FIELDS that are None -> how metrics.json held them
    confusion: np.ndarray | None  # int [n, n], rows true, cols predicted
    history: History
    misclassified: Misclassified | None
    notes: list[str] = field(default_factory=list)
    predictions: TestPredictions | None = (
        None  # None: the run predates PREDICTIONS_FILE  # problems shown in the report
    )

    @property
    def model(self) -> str:
        """The model name (e.g. "seed_cnn")."""
        return self.metrics.model or str(self.role)

    @property
    def display_name(self) -> str:
        """A human-readable model name."""
        return self.metrics.display_name or self.model

    @property
    def class_names(self) -> tuple[str, ...]:
        """The dataset's class names."""
        return self.metrics.class_names

    @property
    def pretrained(self) -> bool:
        """Whether the model started from pretrained weights."""
        return self.metrics.pretrained

    @property
    def numbers(self) -> dict[str, float | None]:
        """NUMBER_FIELDS, None where missing or not finite."""
        return self.metrics.numbers()

    @property
    def accuracy(self) -> float | None:
        """Test accuracy, or None when missing or not finite."""
        return self.metrics.test_accuracy

    def per_class_accuracy(self) -> np.ndarray | None:
        """Confusion-matrix diagonal over row sums (NaN for classes without test images)."""
        if self.confusion is None:
            return None
        rows = self.confusion.sum(axis=1).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(rows > 0, np.diag(self.confusion) / rows, np.nan)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def _confusion(raw: Any, n_classes: int, origin: Path) -> np.ndarray | None:
    if raw is None:
        return None
    try:
        matrix = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{origin}: confusion_matrix is not a numeric matrix") from None
    if matrix.shape != (n_classes, n_classes):
        raise DataError(
            f"{origin}: confusion_matrix has shape {matrix.shape}, "
            f"expected ({n_classes}, {n_classes}) for {n_classes} classes"
        )
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0) or np.any(matrix != np.round(matrix)):
        raise DataError(f"{origin}: confusion_matrix must hold non-negative integer counts")
    return matrix.astype(np.int64)


def load_history(path: Path) -> History:
    """Read history.json; every present series must have one value per epoch."""
    raw = _read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("epoch"), list):
        raise DataError(f"{path}: expected an object with an 'epoch' list")
    epochs = raw["epoch"]
    series = {}
    for name in (*HISTORY_SERIES, "images_per_second"):
        values = raw.get(name)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(epochs):
            length = len(values) if isinstance(values, list) else type(values).__name__
            raise DataError(f"{path}: '{name}' has {length} values for {len(epochs)} epochs")
        series[name] = np.array([np.nan if (v := number(x)) is None else v for x in values])
    phase = raw.get("phase") or ["head"] * len(epochs)
    if len(phase) != len(epochs):
        raise DataError(f"{path}: 'phase' has {len(phase)} values for {len(epochs)} epochs")
    try:
        epoch_numbers = [int(e) for e in epochs]
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'epoch' must hold integers") from None
    return History(epoch=epoch_numbers, phase=[str(p) for p in phase], series=series)


def load_misclassified(path: Path, n_classes: int) -> Misclassified | None:
    """Read misclassified.npz; None when the file is absent."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("images", "labels", "predictions", "confidence")}
    except KeyError as error:
        raise DataError(f"{path}: missing array {error}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    images = arrays["images"]
    if images.ndim == 3:
        images = images[..., np.newaxis]
    count = len(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 [N, H, W, 1|3], got {images.shape}")
    for key in ("labels", "predictions", "confidence"):
        if arrays[key].shape != (count,):
            raise DataError(f"{path}: '{key}' has shape {arrays[key].shape}, expected ({count},)")
    for key in ("labels", "predictions"):
        if count and (arrays[key].min() < 0 or arrays[key].max() >= n_classes):
            raise DataError(f"{path}: '{key}' holds class indices outside 0..{n_classes - 1}")
    return Misclassified(
        images=images,
        labels=arrays["labels"].astype(np.int64),
        predictions=arrays["predictions"].astype(np.int64),
        confidence=arrays["confidence"].astype(np.float32),
    )


def load_run(folder: str | Path, role: Role) -> RunOutputs:
    """Read one training run's folder and validate it."""
    folder = Path(folder)
    metrics_path = folder / METRICS_FILE
    raw = _read_json(metrics_path)
    metrics = TrainingMetrics.from_dict(raw, str(metrics_path))
    missing = {
        name: missing_text(raw, name) for name in NUMBER_FIELDS if getattr(metrics, name) is None
    }
    notes = [f"{role}: {name} is {text}" for name, text in missing.items()]
    count = len(metrics.class_names)
    misclassified = load_misclassified(folder / MISCLASSIFIED_FILE, count)
    if misclassified is None:
        notes.append(f"{role}: no {MISCLASSIFIED_FILE}, so no grid of its wrong predictions")
    predictions = TestPredictions.load(folder / PREDICTIONS_FILE, count, metrics.test_split_sha256)
    if predictions is None:
        notes.append(f"{role}: no {PREDICTIONS_FILE}, so no significance test can use it")
    confusion = _confusion(metrics.confusion_matrix, count, metrics_path)
    counted = None if confusion is None else int(confusion.sum())
    if predictions is not None and counted is not None and len(predictions.labels) != counted:
        raise DataError(
            f"{folder / PREDICTIONS_FILE}: {len(predictions.labels)} test predictions, but "
            f"the confusion matrix of {metrics_path} counts {counted} images"
        )
    return RunOutputs(
        role=role,
        folder=str(folder),
        metrics=metrics,
        missing=missing,
        confusion=confusion,
        history=load_history(folder / HISTORY_FILE),
        misclassified=misclassified,
        notes=notes,
        predictions=predictions,
    )


def check_comparable(cnn: RunOutputs, transfer: RunOutputs) -> None:
    """Both runs must share class names and (when both record it) the test split."""
    if cnn.class_names != transfer.class_names:
        raise DataError(
            f"class names differ: {Path(cnn.folder) / METRICS_FILE} has {list(cnn.class_names)}, "
            f"{Path(transfer.folder) / METRICS_FILE} has {list(transfer.class_names)}"
        )
    splits = (cnn.metrics.test_split_sha256, transfer.metrics.test_split_sha256)
    if all(splits) and splits[0] != splits[1]:
        raise DataError(
            f"the runs were tested on different test splits: {cnn.folder} on {splits[0]}, "
            f"{transfer.folder} on {splits[1]}"
        )
    check_paired(cnn, transfer)


def check_paired(first: RunOutputs, second: RunOutputs) -> None:
    """Both runs' test predictions (when both have them) must cover the same labelled images."""
    if first.predictions is None or second.predictions is None:
        return
    a, b = first.predictions, second.predictions
    if len(a.labels) != len(b.labels) or not np.array_equal(a.labels, b.labels):
        raise DataError(
            f"the test predictions are not paired: {Path(first.folder) / PREDICTIONS_FILE} has "
            f"{len(a.labels)} labels, {Path(second.folder) / PREDICTIONS_FILE} {len(b.labels)}, "
            "and they must be the same labels in the same order"
        )
