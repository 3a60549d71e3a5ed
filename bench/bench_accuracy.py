"""Benchmark: wall time to reach a test accuracy, ours against the blog's procedure.

Both train the same seed CNN and are evaluated on the same held-out test split after every
epoch; the clock stops at the first epoch whose test accuracy reaches the target, or when the
time budget runs out (then the best accuracy so far is reported). Ours: the project's tf.data
input and default recipe (input size, optimizer, learning-rate schedule over its default epochs,
per-epoch seeds, random flips and mirror-averaged predictions). The blog's: `ImageDataGenerator`
from PNG folders at 150x150, RMSprop, one generator for train and test. Both training curves
(test accuracy against training seconds) are kept in the results; the report draws them.

Run: python -m bench.bench_accuracy [--quick] [--target 0.90] [--budget-s 300]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from bench.bench_data import png_folder
from bench.bench_training import BLOG_BATCH, BLOG_SIZE, WORK, blog_model, prepare
from bench.machine import machine_info, print_table


class TimeToAccuracy(keras.callbacks.Callback):
    """Evaluate on the test set after each epoch; stop at the target or past the budget."""

    def __init__(self, evaluate, target: float, budget_s: float):
        super().__init__()
        self.evaluate, self.target, self.budget_s = evaluate, target, budget_s
        self.started = time.perf_counter()
        self.reached_s: float | None = None
        self.best = 0.0
        self.epochs = 0
        self.training_s = 0.0  # wall time minus the evaluations
        self.curve: list[list[float]] = []  # [training seconds, test accuracy] per epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.training_s += time.perf_counter() - self._epoch_start
        self.epochs = epoch + 1
        accuracy = float(self.evaluate(self.model))
        self.curve.append([round(self.training_s, 2), round(accuracy, 4)])
        self.best = max(self.best, accuracy)
        if accuracy >= self.target and self.reached_s is None:
            self.reached_s = self.training_s
            self.model.stop_training = True
        elif self.training_s > self.budget_s:
            self.model.stop_training = True


def ours(dataset: str, target: float, budget_s: float, quick: bool) -> TimeToAccuracy:
    """The project's input pipeline, model and default recipe."""
    from components.common.dataset import load_manifest
    from components.training import data
    from components.training.callbacks import EpochSeeds
    from components.training.config import TrainConfig
    from components.training.models import mirror_averaged
    from components.training.train import build, compile_model

    config = TrainConfig(dataset_uri=dataset, model="seed_cnn")
    manifest = load_manifest(dataset)
    keras.utils.set_random_seed(config.seed)
    model = build(config, manifest, None)
    steps = data.steps(manifest.splits["train"].count, config.batch_size)
    epochs = config.resolved_epochs
    compile_model(model, config, manifest.num_classes, epochs * steps)
    splits = data.load_splits(dataset, manifest, WORK / "cache")
    train = data.per_epoch(
        splits["train"].cache(),
        config.batch_size,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        first=0,
        end=epochs,
    )
    test = data.batched(splits["test"], 512)
    labels = np.concatenate([y.numpy() for _, y in test])

    def evaluate(trained) -> float:
        if config.resolved_mirror:  # as the training step evaluates it
            trained = mirror_averaged(trained)
        return float(np.mean(np.argmax(trained.predict(test, verbose=0), axis=1) == labels))

    clock = TimeToAccuracy(evaluate, target, budget_s)
    # The recipe's schedule spans its default epochs; the clock stops at the target.
    callbacks = [EpochSeeds(config.seed), clock]
    model.fit(train, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    return clock


def blog(dataset: str, target: float, budget_s: float, quick: bool) -> TimeToAccuracy:
    """The blog's procedure, ImageDataGenerator at 150x150 from PNG folders."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    flow = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory
    train = flow(str(png_folder(dataset, "train", quick)), target_size=(BLOG_SIZE, BLOG_SIZE),
                 batch_size=BLOG_BATCH, class_mode="sparse")  # fmt: skip
    test = flow(str(png_folder(dataset, "test", quick)), target_size=(BLOG_SIZE, BLOG_SIZE),
                batch_size=200, class_mode="sparse", shuffle=False)  # fmt: skip
    model = blog_model(train.num_classes)
    model.compile(keras.optimizers.RMSprop(1e-3), "sparse_categorical_crossentropy")

    def evaluate(trained) -> float:
        predictions = np.argmax(trained.predict(test, verbose=0), axis=1)
        return float(np.mean(predictions == test.classes))

    clock = TimeToAccuracy(evaluate, target, budget_s)
    # The blog's schedule unit: epochs of 100 steps of 20 images.
    model.fit(train, steps_per_epoch=100, epochs=100_000, callbacks=[clock], verbose=0)
    return clock


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subset, short budget")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--budget-s", type=float, default=None, help="per contender")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from components.common.logging import configure

    configure("WARNING")
    budget = args.budget_s or (60.0 if args.quick else 300.0)
    dataset = prepare(args.source, 1000 if args.quick else 0)
    rows, results = [], {"machine": machine_info(), "target": args.target, "budget_s": budget}
    for name, contender in (("ours", ours), ("blog", blog)):
        clock = contender(dataset, args.target, budget, args.quick)
        results[name] = {
            "reached_s": None if clock.reached_s is None else round(clock.reached_s, 1),
            "best_test_accuracy": round(clock.best, 4),
            "epochs": clock.epochs,
            "curve": clock.curve,
        }
        reached = "not reached" if clock.reached_s is None else f"{clock.reached_s:.1f}"
        rows.append([name, reached, round(clock.best, 4), clock.epochs])
    print_table(
        f"Training wall time to {args.target:.2f} test accuracy (budget {budget:.0f} s each)",
        ["procedure", "seconds", "best test accuracy", "epochs"],
        rows,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
