"""Small training-run folders laid out as the training step publishes them (for compare tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress"]
TEST_SPLIT = "a" * 64


def confusion_for(accuracy: float, per_class: int = 25, classes: int = 4) -> list[list[int]]:
    """A confusion matrix whose diagonal holds about `accuracy` of each row."""
    right = round(accuracy * per_class)
    matrix = np.zeros((classes, classes), dtype=int)
    for row in range(classes):
        matrix[row, row] = right
        matrix[row, (row + 1) % classes] = per_class - right
    return matrix.tolist()


def write_run(
    folder: Path,
    *,
    model: str = "seed_cnn",
    display_name: str = "Seed CNN",
    accuracy: Any = 0.85,
    epochs: int = 3,
    pretrained: bool = False,
    class_names: list[str] | None = None,
    test_split: str = TEST_SPLIT,
    misclassified: int | None = 8,
    phases: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    checkpoint_dir: str | None = None,
    predictions: Any = "auto",
) -> Path:
    """Write metrics.json, history.json and (unless None) misclassified.npz into `folder`.

    `predictions`: "auto" writes test_predictions.npz agreeing with the confusion matrix (its
    mistakes spread over the images by a seeded permutation); an array writes those predicted
    labels against the confusion matrix's true labels; None writes none (an older run).
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = class_names or CLASS_NAMES
    finite = isinstance(accuracy, float) and accuracy == accuracy
    metrics = {
        "model": model,
        "display_name": display_name,
        "pretrained": pretrained,
        "weights_sha256": ("b" * 64) if pretrained else None,
        "dataset_uri": "/store/datasets/fashion_mnist/0123456789abcdef",
        "dataset_version": "0123456789abcdef",
        "test_split_sha256": test_split,
        "class_names": names,
        "test_accuracy": accuracy,
        "test_loss": 0.4,
        "train_seconds": 12.5,
        "images_per_second": 900.0,
        "params_total": 1_000_000 if model == "seed_cnn" else 9_000_000,
        "params_trainable": 1_000_000 if model == "seed_cnn" else 1_200_000,
        "epochs_run": epochs,
        "input_size": [28, 28],
        "seed": 1,
        "checkpoint_dir": checkpoint_dir,
        "per_class": {
            n: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 25} for n in names
        },
        "confusion_matrix": confusion_for(accuracy if finite else 0.5, classes=len(names)),
        **(extra or {}),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        labels, guessed = paired_predictions(metrics["confusion_matrix"], sum(map(ord, model)))
        if not isinstance(predictions, str):
            guessed = np.asarray(predictions, np.int64)
        np.savez(
            folder / "test_predictions.npz",
            predictions=guessed,
            labels=labels,
            test_split_sha256=np.array(test_split or ""),
        )
    steps = np.arange(1, epochs + 1)
    final = accuracy if finite else 0.5
    history = {
        "epoch": steps.tolist(),
        "phase": phases or ["head"] * epochs,
        "accuracy": (final - 0.2 / steps + 0.02).tolist(),
        "val_accuracy": (final - 0.25 / steps).tolist(),
        "loss": (1.0 / steps).tolist(),
        "val_loss": (1.1 / steps).tolist(),
        "epoch_seconds": [4.0] * epochs,
        "images_per_second": [900.0] * epochs,
    }
    (folder / "history.json").write_text(json.dumps(history))
    if misclassified is not None:
        rng = np.random.default_rng(0)
        labels = rng.integers(0, len(names), misclassified)
        np.savez(
            folder / "misclassified.npz",
            images=rng.integers(0, 256, (misclassified, 12, 12, 1), dtype=np.uint8),
            labels=labels.astype(np.int64),
            predictions=((labels + 1) % len(names)).astype(np.int64),
            confidence=rng.uniform(0.3, 1.0, misclassified).astype(np.float32),
        )
    return folder


def paired_predictions(confusion: list[list[int]], seed: int = 0):
    """(labels, predictions) in a fixed image order that reproduce `confusion` exactly."""
    matrix = np.asarray(confusion, np.int64)
    rows, cols = np.nonzero(matrix)
    counts = matrix[rows, cols]
    labels = np.repeat(rows, counts)
    guessed = np.repeat(cols, counts)
    order = np.argsort(labels, kind="stable")  # images grouped by true class
    labels, guessed = labels[order], guessed[order]
    rng = np.random.default_rng(seed)
    for value in np.unique(labels):  # shuffle the guesses within each class
        index = np.flatnonzero(labels == value)
        guessed[index] = rng.permutation(guessed[index])
    return labels.astype(np.int64), guessed.astype(np.int64)


def write_pair(root: Path, cnn_accuracy: Any = 0.85, transfer_accuracy: Any = 0.9, **transfer):
    """A CNN run and an InceptionV3 transfer run under `root`; returns (cnn_dir, transfer_dir)."""
    cnn = write_run(root / "cnn", accuracy=cnn_accuracy)
    options = {"model": "inception_v3", "display_name": "InceptionV3", "pretrained": True}
    options.update(transfer)
    return cnn, write_run(root / "transfer", accuracy=transfer_accuracy, **options)


def write_arm(
    root: Path, arm: str, model: str, seed: int = 1, accuracy: float = 0.8, **options
) -> Path:
    """One run of an arm ("cnn", "scratch" or "pretrained") of `model` with `seed`, as the
    training step writes it (metrics.json carries arm and seed)."""
    names = {"seed_cnn": "Seed CNN", "inception_v3": "InceptionV3", "resnet50_v2": "ResNet50V2"}
    return write_run(
        root / f"{arm}-{model}-{seed}",
        model=model,
        display_name=names.get(model, model),
        accuracy=accuracy,
        pretrained=arm == "pretrained",
        extra={"arm": arm, "seed": seed},
        **options,
    )
