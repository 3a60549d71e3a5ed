"""The input pipeline: verified shards -> decoded uint8 images -> cached, shuffled batches.

Memory stays bounded whatever the dataset size: a split's decoded images are cached in RAM only
while the splits cached so far fit the RAM budget; beyond it, encoded (PNG/JPEG) shards are
decoded once into a file cache in the scratch folder, and raw shards, already decoded pixels on
disk, are streamed uncached. The shuffle buffer is capped in bytes as well as in images.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from components.common.dataset import IMAGE_KEY, LABEL_KEY, DataError, Manifest, fetch_split
from components.common.logging import get_logger

log = get_logger("training")

SHUFFLE_BYTES = 512 << 20  # cap on the decoded images held in the shuffle buffer
SPLITS = ("train", "validation", "test")


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

    raw = manifest.image_encoding == "raw"

    def parse(records):
        example = tf.io.parse_example(records, features)
        if not raw:
            return example[IMAGE_KEY], example[LABEL_KEY]
        images = tf.io.decode_raw(example[IMAGE_KEY], tf.uint8)
        return tf.reshape(images, [-1, *shape]), example[LABEL_KEY]

    def decode(image, label):
        pixels = tf.io.decode_image(image, channels=shape[2], expand_animations=False)
        return tf.ensure_shape(pixels, shape), label

    # Parse in blocks (vectorised), then unbatch; order is deterministic.
    dataset = tf.data.TFRecordDataset([str(path) for path in paths])
    dataset = dataset.batch(1024).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if not raw:
        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


def batched(dataset, batch_size: int):
    """Batch and prefetch, in order (validation and test); load_splits has cached the images."""
    import tensorflow as tf

    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def capped_shuffle_buffer(dataset, shuffle_buffer: int) -> int:
    """`shuffle_buffer` images, but at most SHUFFLE_BYTES of them (for image datasets)."""
    shape = dataset.element_spec[0].shape
    if shape.rank is None or shape.rank < 1 or not shape.is_fully_defined():
        return shuffle_buffer
    return max(1, min(shuffle_buffer, SHUFFLE_BYTES // max(1, math.prod(shape))))


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

    buffer = capped_shuffle_buffer(dataset, shuffle_buffer)

    def one_epoch(epoch):
        shuffled = dataset.shuffle(
            buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False
        ).batch(batch_size)
        return shuffled if then is None else shuffled.map(then, num_parallel_calls=tf.data.AUTOTUNE)

    epochs = tf.data.Dataset.range(first, max(first, end))
    return epochs.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def steps(count: int, batch_size: int) -> int:
    """Batches in one epoch of `count` images."""
    return -(-count // batch_size)


def cache_plan(manifest: Manifest, ram_budget_bytes: int | None) -> dict[str, str]:
    """How each split is cached: "memory", "file" or "none".

    "memory" while the decoded splits so far fit the budget (None: no limit); beyond it "file"
    for encoded shards (decoded once) and "none" for raw ones (already pixels on disk).
    """
    image_bytes = math.prod(manifest.image_shape)
    remaining = math.inf if ram_budget_bytes is None else ram_budget_bytes
    plan = {}
    for split in SPLITS:
        size = manifest.splits[split].count * image_bytes
        if size <= remaining:
            plan[split], remaining = "memory", remaining - size
        else:
            plan[split] = "none" if manifest.image_encoding == "raw" else "file"
    return plan


def load_splits(
    uri: str, manifest: Manifest, cache_dir: str | Path, ram_budget_bytes: int | None = None
) -> dict:
    """Decoded, cached datasets of the three splits (shards verified first; see cache_plan)."""
    plan = cache_plan(manifest, ram_budget_bytes)
    log.info("cache_plan", ram_budget_bytes=ram_budget_bytes, **plan)
    splits = {}
    for split in SPLITS:
        paths = split_paths(uri, manifest, split, cache_dir)
        dataset = decoded(paths, manifest, manifest.splits[split].count)
        if plan[split] == "memory":
            dataset = dataset.cache()
        elif plan[split] == "file":
            # A folder of this process: a killed run's partial cache (and its lock file) is
            # never reused.
            folder = Path(cache_dir) / "decoded" / manifest.name / manifest.version
            folder.mkdir(parents=True, exist_ok=True)
            own = Path(tempfile.mkdtemp(prefix=f"{split}-", dir=folder))
            dataset = dataset.cache(str(own / split))
        splits[split] = dataset
    return splits


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
