"""Benchmark: data-prep throughput, and reading shards back through tf.data against the blog's
`ImageDataGenerator.flow_from_directory` on the same images written as PNG folders.

Run: python -m bench.bench_data [--quick] [--source auto] [--json out.json]
Prints a table; figures hold only for the machine that produced them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.machine import machine_info, print_table

WORK = Path(__file__).resolve().parent / "work"
REPEATS = 3  # each reader is timed this many times; the best run counts


def source_limit(quick: bool) -> int:
    """Images per source split that data prep reads: 2000 for --quick, else 0 (every image)."""
    return 2000 if quick else 0


def prep(source: str, store: Path, limit: int) -> tuple[str, float, int]:
    from components.data_prep.prep import PrepConfig, run

    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    result = run(PrepConfig(store=str(store), source=source, limit=limit))
    seconds = time.perf_counter() - started
    images = sum(split.count for split in result.manifest.splits.values())
    return result.uri, seconds, images


def tfdata_reader(uri: str, split: str, batch_size: int, resize: int | None, cache: bool = False):
    import tensorflow as tf

    from components.common.dataset import IMAGE_KEY, LABEL_KEY, fetch_split, load_manifest

    manifest = load_manifest(uri)
    files = [str(p) for p in fetch_split(uri, manifest, split, WORK / "cache")]
    shape = manifest.image_shape
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }

    def decode(records):
        parsed = tf.io.parse_example(records, spec)
        images = tf.reshape(tf.io.decode_raw(parsed[IMAGE_KEY], tf.uint8), (-1, *shape))
        if resize:
            images = tf.image.grayscale_to_rgb(images) if shape[2] == 1 else images
            images = tf.image.resize(images, (resize, resize)) / 255.0
        return images, parsed[LABEL_KEY]

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:  # as in training: later epochs read decoded batches from memory
        dataset = dataset.cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def time_tfdata(
    uri: str, split: str, batch_size: int, resize: int | None, cache: bool = False
) -> tuple[float, int]:
    """Images/s of one full pass; with `cache`, of a pass after the cache was filled."""
    dataset = tfdata_reader(uri, split, batch_size, resize, cache)
    for _ in dataset.take(1) if not cache else dataset:  # warm-up (and fill the cache)
        pass
    started = time.perf_counter()
    count = sum(int(images.shape[0]) for images, _ in dataset)
    return count / (time.perf_counter() - started), count


def write_png_folders(uri: str, split: str, out: Path) -> int:
    """Write a split's images as out/<class>/<n>.png, the blog's layout."""
    from PIL import Image

    from components.common.dataset import load_manifest

    manifest = load_manifest(uri)
    shutil.rmtree(out, ignore_errors=True)
    count = 0
    for images, labels in tfdata_reader(uri, split, 512, None):
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            folder = out / f"{int(label):02d}-{manifest.class_names[int(label)].replace('/', '_')}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(
                folder / f"{count}.png"
            )
            count += 1
    return count


def png_folder(uri: str, split: str, quick: bool) -> Path:
    """The split as PNG folders (the blog's layout), in a work folder keyed by what it holds."""
    from bench.workdirs import complete_folder, keyed_folder
    from components.common.dataset import load_manifest

    folder = keyed_folder("png", load_manifest(uri), quick=quick) / split
    complete_folder(folder, lambda tmp: {"images": write_png_folders(uri, split, tmp)})
    return folder


def png_count(folder: Path) -> int:
    """Images in a PNG folder written by `png_folder`."""
    import json

    from bench.workdirs import COMPLETE

    return int(json.loads((folder / COMPLETE).read_text())["images"])


def time_generator(folder: Path, batch_size: int, batches: int) -> float:
    """The blog's reader: ImageDataGenerator(rescale=1/255).flow_from_directory at 150x150."""
    # Keras 3 keeps ImageDataGenerator only in its legacy module (deprecated, slated for removal).
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        str(folder), target_size=(150, 150), batch_size=batch_size, class_mode="sparse"
    )
    next(generator)  # warm-up
    started = time.perf_counter()
    count = sum(len(next(generator)[0]) for _ in range(batches))
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2,000-image subset")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    from components.common.logging import configure

    configure("WARNING")
    uri, prep_seconds, prep_images = prep(args.source, WORK / "store", source_limit(args.quick))
    batch = 128
    png_test = png_folder(uri, "test", args.quick)
    pngs = png_count(png_test)
    batches = 20 if args.quick else 100
    # Best of REPEATS for every reader, interleaved, so that a busy moment of the machine
    # does not land on one side of a ratio only.
    runs = {"native": [], "cached": [], "resized": [], "generator": []}
    repeats = 1 if args.quick else REPEATS
    for _ in range(repeats):
        rate, count = time_tfdata(uri, "test", batch, None)
        runs["native"].append(rate)
        runs["cached"].append(time_tfdata(uri, "test", batch, None, cache=True)[0])
        runs["resized"].append(time_tfdata(uri, "test", batch, 150)[0])
        runs["generator"].append(time_generator(png_test, batch, batches))
    tfdata_native, tfdata_cached, tfdata_resized, generator = (
        max(runs[key]) for key in ("native", "cached", "resized", "generator")
    )
    results = {
        "machine": machine_info(),
        "prep_images": prep_images,
        "prep_seconds": round(prep_seconds, 3),
        "prep_images_per_s": round(prep_images / prep_seconds, 1),
        "read_images": count,
        "png_images": pngs,
        "tfdata_native_images_per_s": round(tfdata_native, 1),
        "tfdata_cached_images_per_s": round(tfdata_cached, 1),
        "tfdata_resized_150_images_per_s": round(tfdata_resized, 1),
        "generator_150_images_per_s": round(generator, 1),
        "ratio_native_vs_generator": round(tfdata_native / generator, 1),
        "ratio_cached_vs_generator": round(tfdata_cached / generator, 1),
        "ratio_resized_vs_generator": round(tfdata_resized / generator, 1),
        "repeats": repeats,
    }
    print_table(
        f"Input pipeline, same test-split images (batch {batch}, best of {repeats})",
        ["reader", "images/s", "x generator"],
        [
            ["data prep (IDX -> shards, all splits)", results["prep_images_per_s"], ""],
            [
                "tf.data shards, native uint8 (resize in model)",
                results["tfdata_native_images_per_s"],
                results["ratio_native_vs_generator"],
            ],
            [
                "tf.data shards, later epochs (cache, as in training)",
                results["tfdata_cached_images_per_s"],
                results["ratio_cached_vs_generator"],
            ],
            [
                "tf.data shards + resize 150x150 on CPU",
                results["tfdata_resized_150_images_per_s"],
                results["ratio_resized_vs_generator"],
            ],
            [
                "blog: ImageDataGenerator PNG folders 150x150",
                results["generator_150_images_per_s"],
                1.0,
            ],
        ],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
