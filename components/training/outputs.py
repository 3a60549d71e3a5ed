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

ORDER = ("model.keras", "saved_model", "history.json", "misclassified.npz", "config.json")


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
    """SavedModel whose `serving_default` takes raw uint8 images [batch, H, W, C]."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *image_shape], tf.uint8, name="image")]
    model.export(str(path), format="tf_saved_model", input_signature=signature, verbose=False)


def write_all(
    output_dir: str | Path,
    *,
    model,
    image_shape: tuple[int, int, int],
    metrics: dict,
    history: dict,
    misclassified: dict,
    config: dict,
) -> None:
    """Stage every output, then move them into `output_dir` (metrics.json last)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".staging-*"):  # left by a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        model.save(staging / "model.keras")
        export_saved_model(model, staging / "saved_model", image_shape)
        (staging / "history.json").write_text(json.dumps(clean(history), indent=2) + "\n")
        np.savez_compressed(staging / "misclassified.npz", **misclassified)
        (staging / "config.json").write_text(json.dumps(clean(config), indent=2) + "\n")
        (staging / "metrics.json").write_text(json.dumps(clean(metrics), indent=2) + "\n")
        for name in (*ORDER, "metrics.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
