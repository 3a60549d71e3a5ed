"""Evaluation on the held-out test split: loss, accuracy, per-class scores, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_MISCLASSIFIED = 36
TEST_PREDICTIONS = "test_predictions"  # keys of the full arrays in Evaluation.misclassified
TEST_LABELS = "test_labels"


@dataclass(frozen=True)
class Evaluation:
    """Test-split results."""

    accuracy: float
    loss: float
    per_class: dict[str, dict[str, float | int | None]]
    confusion: np.ndarray  # int64 [classes, classes], rows true, columns predicted
    # images, labels, predictions, confidence of the most confident mistakes, plus (under
    # TEST_PREDICTIONS and TEST_LABELS) every test image's predicted and true label, which
    # outputs.write_all saves apart as PREDICTIONS_FILE.
    misclassified: dict[str, np.ndarray]

    @property
    def predictions(self) -> np.ndarray:
        """Every test image's predicted class index (int64, test-split order)."""
        return self.misclassified[TEST_PREDICTIONS]

    @property
    def labels(self) -> np.ndarray:
        """Every test image's true class index (int64, test-split order)."""
        return self.misclassified[TEST_LABELS]


def predict(model, dataset) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Probabilities and labels of a batched (images, labels) dataset, plus wrong images.

    Only the images of the MAX_MISCLASSIFIED most confident wrong predictions are kept, by
    index, so memory does not grow with the test split.
    """
    import tensorflow as tf

    forward = tf.function(lambda images: model(images, training=False))
    probs, labels, kept = [], [], {}  # kept: index -> (confidence, image)
    seen = 0
    for batch_images, batch_labels in dataset:
        batch_probs = forward(batch_images).numpy().astype(np.float32)
        batch_truth = batch_labels.numpy()
        probs.append(batch_probs)
        labels.append(batch_truth)
        wrong = np.flatnonzero(batch_probs.argmax(axis=1) != batch_truth)
        if len(wrong):
            pixels = batch_images.numpy()
            for i in wrong:
                kept[seen + int(i)] = (float(batch_probs[i].max()), pixels[i])
            best = sorted(kept, key=lambda i: (-kept[i][0], i))[:MAX_MISCLASSIFIED]
            kept = {i: kept[i] for i in best}
        seen += len(batch_truth)
    images = {i: image for i, (_, image) in kept.items()}
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64), images


def scores(probs: np.ndarray, labels: np.ndarray, images, class_names) -> Evaluation:
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
        "images": _pick(images, wrong),
        "labels": labels[wrong],
        "predictions": predictions[wrong],
        "confidence": confidence[wrong].astype(np.float32),
        TEST_PREDICTIONS: predictions,
        TEST_LABELS: labels.astype(np.int64),
    }
    return Evaluation(accuracy, loss, per_class, confusion.astype(np.int64), misclassified)


def _pick(images, indices: np.ndarray) -> np.ndarray:
    """Images at `indices` from an array, or from predict()'s {index: image} of kept ones."""
    if isinstance(images, np.ndarray):
        return images[indices].astype(np.uint8)
    if not len(indices):
        shape = next(iter(images.values())).shape if images else (0, 0, 1)
        return np.zeros((0, *shape), np.uint8)
    return np.stack([images[int(i)] for i in indices]).astype(np.uint8)
