"""The input pipeline: verified shards -> decoded uint8 images -> cached, shuffled batches."""

from __future__ import annotations

from pathlib import Path

from components.common.dataset import IMAGE_KEY, LABEL_KEY, DataError, Manifest, fetch_split


def split_paths(uri: str, manifest: Manifest, split: str, cache_dir: str | Path) -> list[Path]:
    """The verified local shards of a split; an empty split is an error."""
    info = manifest.splits.get(split)
    if info is None or info.count == 0 or not info.shards:
        raise DataError(f"{uri}: the {split!r} split is empty; training needs images in it")
    return fetch_split(uri, manifest, split, cache_dir)


def decoded(paths: list[Path], manifest: Manifest, count: int):
    """Unbatched (image uint8 [H, W, C], label int64) pairs in manifest order."""
    import tensorflow as tf

    shape = list(manifest.image_shape)
    features = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(records):
        example = tf.io.parse_example(records, features)
        images = tf.io.decode_raw(example[IMAGE_KEY], tf.uint8)
        return tf.reshape(images, [-1, *shape]), example[LABEL_KEY]

    # Parse in blocks (vectorised), then unbatch; order is deterministic.
    dataset = tf.data.TFRecordDataset([str(path) for path in paths])
    dataset = dataset.batch(1024).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.unbatch().apply(tf.data.experimental.assert_cardinality(count))


def batched(dataset, batch_size: int):
    """Cache the small decoded images, batch and prefetch, in order (validation and test)."""
    import tensorflow as tf

    return dataset.cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed: int, epoch):
    """The shuffle seed of one epoch: a function of the run's seed and the epoch number only."""
    return seed * 1_000_003 + epoch


def per_epoch(dataset, batch_size: int, *, seed: int, shuffle_buffer: int, first: int, end: int,
              then=None):  # fmt: skip
    """Training batches for epochs `first` .. `end - 1`, each epoch shuffled by its own seed.

    Epoch k's order does not depend on how many epochs this process ran before it, so a run
    resumed at epoch k sees the batches an uninterrupted run would. `then` maps each batch
    (e.g. decoding). Feed it to fit with `steps_per_epoch = steps(count, batch_size)`.
    """
    import tensorflow as tf

    def one_epoch(epoch):
        shuffled = dataset.shuffle(
            shuffle_buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False
        ).batch(batch_size)
        return shuffled if then is None else shuffled.map(then, num_parallel_calls=tf.data.AUTOTUNE)

    epochs = tf.data.Dataset.range(first, max(first, end))
    return epochs.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def steps(count: int, batch_size: int) -> int:
    """Batches in one epoch of `count` images."""
    return -(-count // batch_size)


def load_splits(uri: str, manifest: Manifest, cache_dir: str | Path) -> dict:
    """Decoded datasets of the train, validation and test splits (shards verified first)."""
    return {
        split: decoded(
            split_paths(uri, manifest, split, cache_dir), manifest, manifest.splits[split].count
        )
        for split in ("train", "validation", "test")
    }


def test_split_sha256(manifest: Manifest) -> str:
    """sha256 of the test shards' sha256s joined in manifest order: names the evaluation set."""
    from components.common.digest import bytes_digest

    joined = "".join(shard.sha256 for shard in manifest.splits["test"].shards)
    return bytes_digest(joined.encode("ascii"))


def check_labels(manifest: Manifest, uri: str) -> None:
    """Every split's class counts agree with the manifest's class names."""
    for name, split in manifest.splits.items():
        unknown = set(split.per_class) - set(manifest.class_names)
        if unknown:
            raise DataError(f"{uri}: split {name!r} counts unknown classes {sorted(unknown)}")
