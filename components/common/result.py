"""The contract between training and compare: a run folder's files and its metrics record.

A training run's output folder holds:

    model.keras  saved_model/  history.json  misclassified.npz  config.json
    metrics.json   written last: the `TrainingMetrics` record

Training writes `TrainingMetrics.to_json()`; compare reads it with `TrainingMetrics.from_dict`,
which turns missing, null or non-finite numbers into None (the report shows them as such).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from components.common.dataset import DataError
from components.common.lineage import as_metadata
from components.common.numbers import finite_or_none

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
MISCLASSIFIED_FILE = "misclassified.npz"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"


class Role(enum.StrEnum):
    """The two sides of the comparison."""

    CNN = "cnn"
    TRANSFER = "transfer"


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
                "resumed": raw.get("resumed") is True,
                "per_class": raw.get("per_class") or {},
                "lineage": raw.get("lineage") or {},
            }
        )
