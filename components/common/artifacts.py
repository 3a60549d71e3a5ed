"""Helpers the steps' artifact adapters share: KFP artifacts are duck-typed here.

An artifact is anything with `.path`, `.metadata` and, for metrics, `log_metric` /
`log_confusion_matrix`, so the adapters are testable without KFP.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from components.common.numbers import finite_or_none


def log_metrics(metrics, values: dict[str, Any]) -> dict[str, float]:
    """Log every finite number (booleans as 1/0) to a Metrics artifact, also as JSON in its file."""
    logged: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float) and finite_or_none(value) is not None:
            metrics.log_metric(name, value)
            logged[name] = value
    write_json(metrics, logged)
    return logged


def write_json(artifact, value: Any) -> None:
    """Write `value` as JSON into the artifact's file."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def copy_file(source: Path, artifact) -> None:
    """Copy one file to the artifact's path."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, artifact.path)


def copy_tree(source: Path, artifact) -> None:
    """Copy a folder's contents into the artifact's folder (created as needed)."""
    shutil.copytree(source, artifact.path, dirs_exist_ok=True)
