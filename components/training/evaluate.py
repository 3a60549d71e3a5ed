"""Evaluation on the held-out test split: loss, accuracy, per-class scores, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_MISCLASSIFIED = 36


@dataclass(frozen=True)
class Evaluation:
    """Test-split results."""

    accuracy: float
    loss: float
    per_class: dict[str, dict[str, float | int | None]]
    confusion: np.ndarray  # int64 [classes, classes], rows true, columns predicted
    misclassified: dict[str, np.ndarray]  # images, labels, predictions, confidence


def predict(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, labels and images of a batched (images, labels) dataset."""
    import tensorflow as tf

    forward = tf.function(lambda images: model(images, training=False))
    probs, labels, images = [], [], []
    for batch_images, batch_labels in dataset:
        probs.append(forward(batch_images).numpy().astype(np.float32))
        labels.append(batch_labels.numpy())
        images.append(batch_images.numpy())
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64), np.concatenate(images)


def scores(probs: np.ndarray, labels: np.ndarray, images: np.ndarray, class_names) -> Evaluation:
    """Compute every test figure from predicted probabilities (pure NumPy)."""
    num_classes = len(class_names)
    predictions = probs.argmax(axis=1).astype(np.int64)
    picked = probs[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    accuracy = float(np.mean(predictions == labels))
    confusion = np.bincount(
        labels * num_classes + predictions, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    per_class = {}
    for index, name in enumerate(class_names):
        true_positive = int(confusion[index, index])
        predicted = int(confusion[:, index].sum())
        support = int(confusion[index].sum())
        precision = true_positive / predicted if predicted else None
        recall = true_positive / support if support else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
            if precision is None or recall is None
            else 0.0
        )
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    wrong = np.flatnonzero(predictions != labels)
    confidence = probs.max(axis=1)
    # The most confident mistakes are the most instructive ones.
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:MAX_MISCLASSIFIED]
    misclassified = {
        "images": images[wrong].astype(np.uint8),
        "labels": labels[wrong],
        "predictions": predictions[wrong],
        "confidence": confidence[wrong].astype(np.float32),
    }
    return Evaluation(accuracy, loss, per_class, confusion.astype(np.int64), misclassified)
