"""Frozen-backbone speed-up: run the backbone once, train the head on cached features.

Features are computed batch by batch and appended to a flat binary file (one fixed-length
record per image), so neither the upscaled images nor all the features are ever held in
memory. Training then streams the file with `FixedLengthRecordDataset`. Files are keyed by
everything that determines them and published with an atomic rename, so a re-run reuses them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.digest import json_digest
from components.common.logging import get_logger
from components.training.checkpoint import TrainingInterrupted

log = get_logger("training")

SHUFFLE_BYTES = 256 << 20  # cap on the shuffle buffer of feature records


@dataclass(frozen=True)
class FeatureFile:
    """A split's features on disk and its labels."""

    path: Path
    labels: np.ndarray  # int64 [N]
    shape: tuple[int, ...]  # one record's feature shape
    dtype: str

    @property
    def record_bytes(self) -> int:
        """Bytes per image."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def cache_key(**facts) -> str:
    """A short hash of everything the features depend on."""
    return json_digest(facts)[:16]


def extract(feature_model, dataset, folder: Path, split: str, dtype: str, preemption=None):
    """Write the backbone features of a batched (images, labels) dataset; reuse a previous run."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = folder / f"{split}.bin", folder / f"{split}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        labels = np.load(folder / f"{split}.labels.npy")
        log.info("features_cache_hit", split=split, path=str(path))
        return FeatureFile(path, labels, tuple(meta["shape"]), meta["dtype"])

    forward = tf.function(lambda images: feature_model(images, training=False))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    labels, shape = [], None
    try:
        with open(tmp, "wb") as handle:
            for images, batch_labels in dataset:
                if preemption is not None and preemption.requested:
                    raise TrainingInterrupted("SIGTERM during feature extraction")
                features = forward(images).numpy().astype(dtype)
                shape = features.shape[1:]
                handle.write(features.tobytes())
                labels.append(batch_labels.numpy())
        labels_array = np.concatenate(labels).astype(np.int64)
        np.save(folder / f"{split}.labels.npy", labels_array)
        meta_path.with_suffix(".tmp").write_text(json.dumps({"shape": list(shape), "dtype": dtype}))
        os.replace(tmp, path)
        os.replace(meta_path.with_suffix(".tmp"), meta_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("features_extracted", split=split, images=len(labels_array), shape=list(shape))
    return FeatureFile(path, labels_array, tuple(shape), dtype)


def _records(feature_file: FeatureFile):
    """(raw record, label) pairs of a feature file, and the function that decodes a batch."""
    import tensorflow as tf

    shape, dtype = list(feature_file.shape), tf.as_dtype(feature_file.dtype)
    records = tf.data.FixedLengthRecordDataset(
        str(feature_file.path), feature_file.record_bytes, buffer_size=8 << 20
    )
    labels = tf.data.Dataset.from_tensor_slices(feature_file.labels)
    dataset = tf.data.Dataset.zip((records, labels)).apply(
        tf.data.experimental.assert_cardinality(len(feature_file.labels))
    )

    def decode(raw, label):
        features = tf.reshape(tf.io.decode_raw(raw, dtype), [-1, *shape])
        return tf.cast(features, tf.float32), label

    return dataset, decode


def shuffle_buffer(feature_file: FeatureFile) -> int:
    """Records in the shuffle buffer: all of them, up to SHUFFLE_BYTES."""
    return max(1, min(len(feature_file.labels), SHUFFLE_BYTES // feature_file.record_bytes))


def feature_dataset(feature_file: FeatureFile, batch_size: int):
    """Stream (features, label) batches from a feature file in order (validation)."""
    import tensorflow as tf

    dataset, decode = _records(feature_file)
    dataset = dataset.batch(batch_size).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def feature_epochs(feature_file: FeatureFile, batch_size: int, *, seed: int, first: int, end: int):
    """Shuffled training batches of epochs `first` .. `end - 1` (see data.per_epoch)."""
    from components.training import data

    dataset, decode = _records(feature_file)
    return data.per_epoch(
        dataset,
        batch_size,
        seed=seed,
        shuffle_buffer=shuffle_buffer(feature_file),
        first=first,
        end=end,
        then=decode,
    )
