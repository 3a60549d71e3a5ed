"""Benchmark: training throughput, accuracy, the feature-cache speed-up and peak memory.

Side by side in one run, on real Fashion-MNIST:
0. The same-run reference: seed_cnn training images/s of the project's training step (tf.data,
   callbacks, its default recipe) at the recipe's own size (and, in `reference_main`, make
   bench's "reference" section, at 28 and 56 px, two epochs each), each against
   plain Keras `model.fit` of the same model (same builder, optimizer, loss, batch size and
   input size) on the train split held in memory as NumPy arrays, measured right after it in
   the same run. Goal: ratio >= 0.9.
1. seed_cnn training images/s with our pipeline and default recipe, against the blog's own
   procedure: the same CNN fed by `ImageDataGenerator.flow_from_directory` from PNG folders at
   150x150 (its rotation/shear/zoom need SciPy, not installed here, so they are left out:
   that only flatters the baseline). Keras 3 keeps `ImageDataGenerator` only in its deprecated
   legacy module, `keras.src.legacy.preprocessing.image`; that is what runs here. Goal >= 3x.
2. seed_cnn test accuracy with the default recipe (goal >= 0.93 on the full dataset).
3. Seconds per epoch of head training on cached features against training through the frozen
   InceptionV3 (cut at mixed7) at 150x150 (goal >= 20x). Random-init backbone: speed only.
4. Peak RSS of each step, each run as its own process on the dataset (goal < 4 GB).

Run: python -m bench.bench_training [--quick] [--json out.json]
`--quick` uses a 1,000-image-per-split subset and single epochs: it proves the script works;
its accuracy is not the recipe's. Figures hold only for the machine that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import keras

from bench.bench_data import png_folder
from bench.machine import machine_info, print_table, run_peak_rss
from bench.workdirs import relative

REPO = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / "work" / "training"
# Per-process scratch (PNG folders, step outputs, features), so concurrent runs never collide.
SCRATCH = WORK / f"run-{os.getpid()}"
BLOG_BATCH = 20  # the blog's generator batch size
BLOG_SIZE = 150
TRANSFER_LIMIT = 5_000  # images per source split for the full run's transfer step (CPU time)


def prepare(source: str, limit: int) -> str:
    """Prepare `source` into the bench's store (`limit` images per split; 0: all)."""
    from components.data_prep.prep import PrepConfig, run

    return run(PrepConfig(store=str(WORK / "store"), source=source, limit=limit)).uri


def weights_file() -> tuple[Path, str]:
    """A randomly initialised InceptionV3 no-top weights file (the real one is not reachable)."""
    import keras

    from components.common.digest import file_digest

    path = WORK / "random_inception_v3_notop.weights.h5"
    if not path.exists():
        keras.applications.InceptionV3(include_top=False, weights=None).save_weights(path)
    return path, file_digest(path)


def run_step(step: str, dataset: str, name: str, *extra: str) -> tuple[dict, dict, float]:
    """Run a training step as its own process; return metrics, history and peak RSS (GiB)."""
    out = SCRATCH / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "components.training", step, "--dataset", dataset,
        "--output-dir", str(out), "--cache-dir", str(WORK / "cache"), "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip
    code, peak_mib = run_peak_rss(command, cwd=REPO)
    if code != 0:
        raise SystemExit(f"{step} failed with exit status {code}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    return metrics, history, peak_mib / 1024


def steady_images_per_s(history: dict) -> float:
    """Training images/s, leaving out the first epoch (graph tracing) when there are more."""
    values = history["images_per_second"]
    steady = values[1:] or values
    return sum(steady) / len(steady)


REFERENCE_SIZES = (28, 56)  # input sizes of the same-run reference, besides the recipe's own


def train_arrays(dataset: str):
    """The train split as in-memory uint8 images and int labels, and its manifest."""
    import numpy as np

    from components.common.dataset import load_manifest
    from components.training import data

    manifest = load_manifest(dataset)
    paths = data.split_paths(dataset, manifest, "train", WORK / "cache")
    pairs = [(x.numpy(), y.numpy()) for x, y in data.decoded(
        paths, manifest, manifest.splits["train"].count).batch(4096)]  # fmt: skip
    return manifest, np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def reference_images_per_s(arrays, input_size: int, epochs: int = 2) -> dict:
    """Plain Keras: `model.fit` of the step's model on in-memory arrays, its last epoch.

    The model, optimizer (schedule included), loss and batch size are the training step's
    defaults; only the input pipeline and the step's callbacks are left out. Returns images/s,
    and the page faults per step and the kernel's share of the CPU in that epoch.
    """
    import resource

    from components.training.config import TrainConfig
    from components.training.train import build, compile_model

    manifest, images, labels = arrays
    config = TrainConfig(dataset_uri="-", input_size=input_size)
    keras.utils.set_random_seed(config.seed)
    model = build(config, manifest, None)
    steps = -(-len(labels) // config.batch_size)
    compile_model(model, config, manifest.num_classes, steps * epochs)

    class Usage(EpochTimes):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self.usage = resource.getrusage(resource.RUSAGE_SELF)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            now = resource.getrusage(resource.RUSAGE_SELF)
            self.faults = now.ru_minflt - self.usage.ru_minflt
            self.kernel = now.ru_stime - self.usage.ru_stime

    times = Usage()
    model.fit(images, labels, batch_size=config.batch_size, epochs=epochs, callbacks=[times],
              verbose=0)  # fmt: skip
    seconds = times.seconds[-1]
    return {
        "images_per_s": len(labels) / seconds,
        "page_faults_per_step": times.faults / steps,
        "kernel_cores": times.kernel / seconds,
    }


def reference_process(dataset: str, size: int, glibc_default: bool) -> dict:
    """`reference_images_per_s` in a process of its own, with the step's allocator settings
    (`components.training.device.keep_freed_memory`) or glibc's default."""
    from components.training.device import ALLOCATOR_ENV

    env = {key: value for key, value in os.environ.items() if key != ALLOCATOR_ENV}
    if glibc_default:
        env[ALLOCATOR_ENV] = "1"
    command = [sys.executable, "-m", "bench.bench_training", "--reference-child", dataset,
               str(size)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"plain-Keras reference at {size}px failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_child(dataset: str, size: int) -> None:
    """Child of `reference_process`: print the reference's figures as one JSON line."""
    from components.common.logging import configure
    from components.training.device import keep_freed_memory

    configure("WARNING")
    keep_freed_memory()  # a no-op under ALLOCATOR_ENV=1, as in the training step
    print(json.dumps(reference_images_per_s(train_arrays(dataset), size)), flush=True)


def same_run_reference(dataset: str, sizes, recipe_size: int = 0, recipe_rate: float = 0.0) -> dict:
    """The step's steady images/s against plain Keras' at each size, measured back to back.

    At `recipe_size` the step's figure is `recipe_rate` (its default recipe's run); at the
    other sizes the step runs two epochs. Plain Keras runs twice, each in its own process:
    with the allocator settings the step uses (the like-for-like reference of the ratio), and
    with glibc's default (what `model.fit` gets without them).
    """
    rows = {}
    for size in sorted(set(sizes)):
        if size == recipe_size:
            ours = recipe_rate
        else:
            _, history, _ = run_step(
                "cnn", dataset, f"cnn-{size}px", "--epochs", "2", "--input-size", str(size)
            )
            ours = steady_images_per_s(history)
        same = reference_process(dataset, size, glibc_default=False)
        default = reference_process(dataset, size, glibc_default=True)
        rows[str(size)] = {
            "ours_images_per_s": round(ours, 1),
            "keras_fit_images_per_s": round(same["images_per_s"], 1),
            "ratio": round(ours / same["images_per_s"], 3),
            "keras_fit_glibc_default_images_per_s": round(default["images_per_s"], 1),
            "ratio_to_glibc_default": round(ours / default["images_per_s"], 3),
            "page_faults_per_step": round(same["page_faults_per_step"]),
            "page_faults_per_step_glibc_default": round(default["page_faults_per_step"]),
            "kernel_cores": round(same["kernel_cores"], 2),
            "kernel_cores_glibc_default": round(default["kernel_cores"], 2),
        }
    return rows


def blog_model(num_classes: int):
    """The seed CNN as the blog built it: 150x150x3 inputs already scaled by the generator."""
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((BLOG_SIZE, BLOG_SIZE, 3)),
            layers.Conv2D(32, 2, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 2, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 2, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(1024, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )


class EpochTimes(keras.callbacks.Callback):
    """Collect epoch wall times of a fit."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def blog_images_per_s(folder: Path, num_classes: int, steps: int) -> float:
    """The blog's procedure: ImageDataGenerator from PNG folders at 150x150, same CNN.

    The blog's random rotation/shear/zoom need SciPy, which this project does not install; they
    are left out, which only makes the baseline faster (the ratio is conservative).
    """
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rescale=1.0 / 255, horizontal_flip=True).flow_from_directory(
        str(folder), target_size=(BLOG_SIZE, BLOG_SIZE), batch_size=BLOG_BATCH, class_mode="sparse"
    )
    model = blog_model(num_classes)
    model.compile("rmsprop", "sparse_categorical_crossentropy", metrics=["accuracy"])
    times = EpochTimes()
    steps = min(steps, len(generator))
    model.fit(generator, steps_per_epoch=steps, epochs=2, callbacks=[times], verbose=0)
    images = sum(len(generator[i][1]) for i in range(steps))
    return images / times.seconds[-1]  # second epoch: no tracing


def head_vs_backbone(dataset: str, images: int, batch: int) -> dict:
    """Seconds per epoch: head on cached features vs through the frozen backbone at 150x150."""
    import tensorflow as tf

    from components.common.dataset import load_manifest
    from components.training import data, features
    from components.training.models import build_transfer

    manifest = load_manifest(dataset)
    train = data.decoded(
        data.split_paths(dataset, manifest, "train", WORK / "cache"),
        manifest,
        manifest.splits["train"].count,
    ).take(images)
    raw = train.cache().batch(batch).prefetch(tf.data.AUTOTUNE)
    built = build_transfer(manifest.image_shape, manifest.num_classes, 150, None, "mixed7")
    results = {}
    for name, model, dataset_ in (("backbone", built.full, raw), ("features", built.head, None)):
        if dataset_ is None:
            started = time.perf_counter()
            folder = SCRATCH / "features"
            shutil.rmtree(folder, ignore_errors=True)
            feature_file = features.extract(built.features, raw, folder, "train", "float16")
            results["extract_seconds"] = time.perf_counter() - started
            dataset_ = features.feature_epochs(feature_file, batch, seed=0, first=0, end=2)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        times = EpochTimes()
        model.fit(
            dataset_, epochs=2, steps_per_epoch=data.steps(images, batch), callbacks=[times],
            verbose=0,
        )  # fmt: skip
        results[f"{name}_epoch_seconds"] = times.seconds[-1]
    results["images"] = images
    return results


def reference_main(argv: list[str] | None = None) -> dict:
    """`make bench`'s reference section: the step against plain Keras fit at 28 and 56 px."""
    parser = argparse.ArgumentParser(description="same-run plain-Keras reference")
    parser.add_argument("--quick", action="store_true", help="1,000-image subset")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from components.common.logging import configure

    configure("WARNING")
    dataset = prepare(args.source, 1000 if args.quick else 0)
    reference = same_run_reference(dataset, REFERENCE_SIZES)
    results = {"machine": machine_info(), "quick": args.quick, "reference": reference}
    print_table(
        "seed_cnn training images/s: training step vs plain Keras fit (same run)",
        ["input px", "training step", "plain Keras fit", "ratio", "goal"],
        [[size, row["ours_images_per_s"], row["keras_fit_images_per_s"], row["ratio"], ">= 0.9"]
         for size, row in reference.items()],
    )  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000-image subset, short runs")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    from components.common.logging import configure

    configure("WARNING")
    quick = args.quick
    dataset = prepare(args.source, 1000 if quick else 0)
    # 1 + 2 + 4 (CNN): our default recipe, as its own process.
    cnn_args = ["--epochs", "2"] if quick else []
    cnn, cnn_history, cnn_rss = run_step("cnn", dataset, "cnn", *cnn_args)
    ours = steady_images_per_s(cnn_history)
    # 0: the same-run reference, right after the recipe's run.
    size = cnn["input_size"]
    reference = same_run_reference(dataset, [size], size, ours)
    png = png_folder(dataset, "train", quick)
    blog = blog_images_per_s(png, len(cnn["class_names"]), 10 if quick else 100)
    # 3: head on features vs through the frozen backbone.
    speed = head_vs_backbone(dataset, 512 if quick else 1024, 128)
    # 4 (transfer): one head epoch, random-init backbone, as its own process. On a CPU the
    # backbone pass over all 70,000 images at 150x150 takes most of an hour, so the full run
    # uses a class-balanced subset of TRANSFER_LIMIT images per source split.
    transfer_dataset = dataset if quick else prepare(args.source, TRANSFER_LIMIT)
    # A randomly initialised weights file makes it the transfer arm (frozen backbone, head on
    # cached features); without weights the step would train the scratch arm end to end.
    weights, _ = weights_file()
    transfer, _, transfer_rss = run_step(
        "transfer", transfer_dataset, "transfer", "--epochs", "1", "--weights", str(weights)
    )
    ratio_speed = speed["backbone_epoch_seconds"] / speed["features_epoch_seconds"]
    results = {
        "machine": machine_info(),
        "quick": quick,
        "dataset": relative(dataset),
        "cnn_images_per_s": round(ours, 1),
        "blog_images_per_s": round(blog, 1),
        "cnn_vs_blog": round(ours / blog, 2),
        "cnn_test_accuracy": round(cnn["test_accuracy"], 4),
        "cnn_epochs_run": cnn["epochs_run"],
        "cnn_input_size": cnn["input_size"],
        "cnn_vs_keras_fit": reference[str(cnn["input_size"])]["ratio"],
        "reference": reference,
        **{key: round(value, 3) for key, value in speed.items()},
        "features_vs_backbone": round(ratio_speed, 1),
        "cnn_peak_rss_gib": round(cnn_rss, 2),
        "transfer_peak_rss_gib": round(transfer_rss, 2),
        "transfer_test_accuracy_random_init": round(transfer["test_accuracy"], 4),
        "transfer_test_images": sum(sum(row) for row in transfer["confusion_matrix"]),
    }
    mode = "quick subset" if quick else "full dataset"
    print_table(
        f"Training benchmarks ({mode}; {results['machine']['cores']} cores)",
        ["measure", "ours", "baseline", "ratio / value", "goal"],
        [
            *[
                [
                    f"seed_cnn training images/s at {size}px: training step vs plain Keras fit "
                    "on in-memory arrays (same run)",
                    row["ours_images_per_s"],
                    row["keras_fit_images_per_s"],
                    f"{row['ratio']}x",
                    ">= 0.9x",
                ]
                for size, row in reference.items()
            ],
            [
                f"seed_cnn training images/s (ours: {cnn['input_size']}px tf.data; baseline: "
                f"blog ImageDataGenerator PNG {BLOG_SIZE}px, legacy module)",
                results["cnn_images_per_s"],
                results["blog_images_per_s"],
                f"{results['cnn_vs_blog']}x",
                ">= 3x",
            ],
            [
                f"seed_cnn test accuracy, default recipe ({cnn['epochs_run']} epochs)",
                results["cnn_test_accuracy"],
                "",
                results["cnn_test_accuracy"],
                ">= 0.93 (full)",
            ],
            [
                f"head epoch seconds, {speed['images']} images, 150px mixed7: cached features "
                "vs frozen backbone",
                round(speed["features_epoch_seconds"], 3),
                round(speed["backbone_epoch_seconds"], 3),
                f"{results['features_vs_backbone']}x",
                ">= 20x",
            ],
            ["peak RSS, train_cnn (GiB)", results["cnn_peak_rss_gib"], "", "", "< 4"],
            ["peak RSS, train_transfer (GiB)", results["transfer_peak_rss_gib"], "", "", "< 4"],
        ],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reference-child"]:
        reference_child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
