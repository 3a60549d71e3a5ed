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


def batched(dataset, batch_size: int, *, training: bool, seed: int, shuffle_buffer: int):
    """Cache the small decoded images, shuffle (seeded, training only), batch and prefetch."""
    import tensorflow as tf

    dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
