"""Benchmark: throughput of the transfer model's phases, at 150x150 with InceptionV3 cut at mixed7.

Side by side in one run, on real Fashion-MNIST images (random-init backbone: speed only):
- frozen backbone forward pass (what feature extraction costs), images/s;
- head training through the frozen backbone, images/s;
- fine-tune phase (backbone unfrozen from mixed5), images/s;
- with a GPU: each of these with mixed precision + XLA on against off.

Run: python -m bench.bench_transfer [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.bench_training import WORK, prepare
from bench.machine import machine_info, print_table

INPUT_SIZE = 150
CUT_LAYER = "mixed7"
FINE_TUNE_FROM = "mixed5"
ALL_IMAGES = 70_000  # Fashion-MNIST, every split


def batches(dataset: str, batch: int, count: int):
    """`count` batches of raw uint8 training images and labels, materialised in memory."""
    import tensorflow as tf

    from components.common.dataset import load_manifest
    from components.training import data

    manifest = load_manifest(dataset)
    train = data.decoded(
        data.split_paths(dataset, manifest, "train", WORK / "cache"),
        manifest,
        manifest.splits["train"].count,
    )
    taken = list(train.batch(batch).take(count))
    return manifest, [(tf.constant(x), tf.constant(y)) for x, y in taken]


def timed(step, inputs, warmup: int = 2) -> float:
    """Images/s of `step` over the batches, after `warmup` untimed calls (tracing, XLA)."""
    for x, y in inputs[:warmup]:
        step(x, y)
    started = time.perf_counter()
    images = 0
    for x, y in inputs[warmup:] or inputs:  # tiny datasets: time the warm-up batches again
        step(x, y)
        images += int(x.shape[0])
    return images / (time.perf_counter() - started)


def measure(manifest, inputs, *, fast: bool) -> dict:
    """Forward, head-training and fine-tune images/s; `fast`: mixed precision + XLA."""
    import keras
    import tensorflow as tf

    from components.training.models import build_transfer, unfreeze_from

    keras.mixed_precision.set_global_policy("mixed_float16" if fast else "float32")
    built = build_transfer(manifest.image_shape, manifest.num_classes, INPUT_SIZE, None, CUT_LAYER)
    features = tf.function(lambda x: built.features(x, training=False), jit_compile=fast)
    results = {"forward": timed(lambda x, y: features(x).numpy(), inputs)}
    for phase in ("head", "fine_tune"):
        if phase == "fine_tune":
            unfreeze_from(built.backbone, FINE_TUNE_FROM)
        model = built.full
        model.compile(
            keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", jit_compile=fast
        )
        results[phase] = timed(lambda x, y, m=model: m.train_on_batch(x, y), inputs)
    keras.mixed_precision.set_global_policy("float32")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller batches")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import tensorflow as tf

    from components.common.logging import configure

    configure("WARNING")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    batch = 256 if gpu else 32
    count = (12 if args.quick else 40) if gpu else (4 if args.quick else 10)
    dataset = prepare(args.source, 1000 if args.quick else 0)
    manifest, inputs = batches(dataset, batch, count)
    results = {"machine": machine_info(), "batch": batch, "gpu": gpu}
    results["plain"] = {k: round(v, 1) for k, v in measure(manifest, inputs, fast=False).items()}
    if gpu:
        fast = measure(manifest, inputs, fast=True)
        results["mixed_precision_xla"] = {k: round(v, 1) for k, v in fast.items()}
    best = results.get("mixed_precision_xla", results["plain"])
    results["implied_extract_all_seconds"] = round(ALL_IMAGES / best["forward"], 1)
    rows = []
    for name, label in (
        ("forward", "frozen backbone forward (feature extraction)"),
        ("head", "head training through the frozen backbone"),
        ("fine_tune", f"fine-tune phase (unfrozen from {FINE_TUNE_FROM})"),
    ):
        row = [label, results["plain"][name]]
        if gpu:
            fast_value = results["mixed_precision_xla"][name]
            row += [fast_value, f"{fast_value / results['plain'][name]:.1f}x"]
        rows.append(row)
    header = ["phase (150px, mixed7)", "images/s fp32"]
    if gpu:
        header += ["images/s mixed precision + XLA", "speed-up"]
    print_table(f"Transfer throughput (batch {batch}, {'GPU' if gpu else 'CPU'})", header, rows)
    print(
        f"Feature extraction for all {ALL_IMAGES:,} images at this rate: "
        f"{results['implied_extract_all_seconds']} s\n"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
