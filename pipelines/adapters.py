"""What the KFP component bodies call: parameters -> step configs, step outputs -> artifacts.

Kept out of the component functions (which KFP serialises as source) so that it is importable,
testable without KFP, and the same in every runner. Artifacts are duck-typed: anything with
`.path`, `.metadata` and, for metrics, `log_metric` / `log_confusion_matrix`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from components.common import storage
from components.common.digest import json_digest

# Training parameters that define a run's result; their hash names the checkpoint folder, so a
# retried task (same inputs) resumes and a different one starts afresh.
_CHECKPOINT_KEYS = (
    "dataset_uri",
    "model",
    "weights",
    "input_size",
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "augmentation",
    "cut_layer",
    "fine_tune_from",
    "fine_tune_epochs",
    "fine_tune_learning_rate",
    "seed",
)


def train_config(*, work: Path, store: str, weights_uri: str, fine_tune_from: str, **params: Any):
    """The TrainConfig for one training task; outputs go to `work/output` (local)."""
    from components.training.config import TrainConfig

    values = {
        **params,
        "weights": weights_uri or None,
        "fine_tune_from": fine_tune_from or None,
    }
    key = json_digest({name: values.get(name) for name in _CHECKPOINT_KEYS})[:16]
    return TrainConfig(
        **values,
        output_dir=str(work / "output"),
        cache_dir=str(work / "cache"),
        checkpoint_dir=storage.join(store, "checkpoints", key, values["model"]),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def log_metrics(metrics, values: dict[str, Any]) -> dict[str, float]:
    """Log every finite number (booleans as 1/0) to a Metrics artifact, also as JSON in its file."""
    logged: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if _finite(value):
            metrics.log_metric(name, value)
            logged[name] = value
    Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics.path).write_text(json.dumps(logged, indent=2, sort_keys=True) + "\n")
    return logged


def copy_tree(source: Path, destination: str) -> None:
    """Copy a folder's contents into an artifact's folder (created as needed)."""
    shutil.copytree(source, destination, dirs_exist_ok=True)


def write_training_artifacts(*, output_dir: Path, model, metrics, classification, history) -> dict:
    """Publish a training output folder: Model folder, Metrics, ClassificationMetrics, history."""
    values = json.loads((output_dir / "metrics.json").read_text())
    copy_tree(output_dir, model.path)
    model.metadata.update(
        {
            "framework": "keras",
            "model": values.get("model"),
            "display_name": values.get("display_name"),
            "pretrained": bool(values.get("pretrained")),
            "weights_sha256": values.get("weights_sha256"),
            "dataset_uri": values.get("dataset_uri"),
            "dataset_version": values.get("dataset_version"),
            "test_accuracy": values.get("test_accuracy"),
            "input_size": values.get("input_size"),
        }
    )
    log_metrics(metrics, values)
    matrix = values.get("confusion_matrix")
    if matrix:
        classification.log_confusion_matrix(
            list(values["class_names"]), [[int(cell) for cell in row] for row in matrix]
        )
    Path(history.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(output_dir / "history.json", history.path)
    return values


def compare_config(*, dataset_name: str, **params: Any):
    """The CompareConfig for the compare task."""
    from components.compare.compare import CompareConfig

    return CompareConfig(dataset=dataset_name, **params)


def write_compare_artifacts(
    *, output_dir: Path, report, summary, metrics, figures, champion: dict
) -> None:
    """Publish the comparison: HTML report, Markdown summary, flat Metrics, figures folder."""
    for artifact, name in ((report, "report.html"), (summary, "summary.md")):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(output_dir / name, artifact.path)
    log_metrics(metrics, json.loads((output_dir / "metrics.json").read_text()))
    Path(figures.path).mkdir(parents=True, exist_ok=True)
    for path in sorted(output_dir.iterdir()):
        if path.suffix in (".png", ".json") and path.name != "metrics.json":
            shutil.copyfile(path, Path(figures.path) / path.name)
    decision = {k: v for k, v in champion.items() if isinstance(v, str | int | float | bool)}
    for artifact in (report, summary, figures):
        artifact.metadata.update({f"champion_{k}": v for k, v in decision.items()})
