"""Subsetting, the stratified validation hold-out, and TFRecord shard writing."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from components.common.dataset import IMAGE_KEY, LABEL_KEY, Shard
from components.common.digest import file_digest


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most `limit` items, classes taken round-robin in a seeded order."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    # Rank each item within its class, then take the lowest ranks first: round-robin.
    order = sorted(
        ((rank, c, int(i)) for c, members in enumerate(per_class) for rank, i in enumerate(members))
    )
    return np.sort(np.asarray([i for _, _, i in order[:limit]], dtype=np.int64))


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation), `fraction` of each class held out, seeded.

    The validation size is round(fraction * N); per-class quotas follow the largest-remainder
    method, so classes stay in proportion even when they are small. Both index arrays come back
    shuffled, so shards mix classes.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    exact = np.asarray([fraction * len(m) for m in members])
    quotas = np.floor(exact).astype(np.int64)
    missing = round(fraction * len(labels)) - int(quotas.sum())
    if missing > 0:
        # Largest remainders first; ties broken in a seeded random order.
        order = np.lexsort((rng.random(len(classes)), -(exact - quotas)))
        quotas[order[:missing]] += 1
    validation = [m[:q] for m, q in zip(members, quotas, strict=True)]
    train = [m[q:] for m, q in zip(members, quotas, strict=True)]
    empty = np.array([], np.int64)
    train_idx = rng.permutation(np.concatenate(train)) if train else empty
    val_idx = rng.permutation(np.concatenate(validation)) if validation else empty
    return train_idx, val_idx


def shard_count(num_records: int, records_per_shard: int) -> int:
    """How many shards a split of `num_records` needs (at least one)."""
    return max(1, math.ceil(num_records / records_per_shard))


def write_shards(
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    out_dir: Path,
    records_per_shard: int,
) -> list[Shard]:
    """Write a split as TFRecord shards of raw uint8 images; return their descriptions."""
    records = ((image.tobytes(), int(label)) for image, label in zip(images, labels, strict=True))
    return write_records(records, len(labels), split, out_dir, records_per_shard)


def write_records(
    records: Iterable[tuple[bytes, int]],
    count: int,
    split: str,
    out_dir: Path,
    records_per_shard: int,
) -> list[Shard]:
    """Stream `count` (image bytes, label) records into TFRecord shards, one record in memory."""
    import tensorflow as tf  # deferred: a cache hit never pays TensorFlow's import

    total = shard_count(count, records_per_shard)
    iterator = iter(records)
    shards = []
    for index, start in enumerate(range(0, max(count, 1), records_per_shard)):
        name = f"{split}-{index:05d}-of-{total:05d}.tfrecord"
        path = out_dir / name
        stop = min(start + records_per_shard, count)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for _ in range(start, stop):
                image, label = next(iterator)
                writer.write(_example(image, label))
        shards.append(Shard(name, file_digest(path), stop - start, path.stat().st_size))
    return shards


def _example(image: bytes, label: int) -> bytes:
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
