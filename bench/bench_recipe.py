"""Recipe search for the seed CNN: plain Keras on in-memory arrays, selected on validation.

Each trial trains the seed architecture (components.training.models.build_seed_cnn, unchanged)
with Adam, linear warmup (by default over the first tenth of the steps) then cosine decay, batch
128 unless given, with the training step's allocator settings, on the project's prepared
Fashion-MNIST (train 54,000 / validation 6,000 / test 10,000). After every
epoch it records the validation accuracy (what the choice is made on), the test accuracy (only
reported, never used to choose) and the epoch's seconds. Writes
`bench/results/recipe/<machine>.json`; the report renders it.

Run: python -m bench.bench_recipe '[{"name": "40px", "size": 40, "lr": 0.002, "epochs": 15}]'
Trial keys: name, size, lr, epochs; optional eps (label smoothing), aug (augmentation strength),
warmup (share of the steps), batch, stop (end after this many epochs of the schedule), seed,
ema (momentum of an exponential moving average of the weights, evaluated in their place; 0: none),
wd (decoupled weight decay), flip (random horizontal flips as the only augmentation).
Besides plain accuracy it records the accuracy of flip test-time augmentation (`val_tta`,
`test_tta`: the mean of the predictions on an image and its mirror image).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import keras
import numpy as np

from bench.bench_training import WORK, prepare
from bench.machine import LoadMonitor, machine_info
from components.training.device import keep_freed_memory

RESULTS = Path(__file__).resolve().parent / "results" / "recipe"
BATCH = 128


def split_arrays(dataset: str) -> dict:
    """Every split as in-memory uint8 images and labels."""
    from components.common.dataset import load_manifest
    from components.training import data

    manifest = load_manifest(dataset)
    arrays = {}
    for split in ("train", "validation", "test"):
        paths = data.split_paths(dataset, manifest, split, WORK / "cache")
        pairs = [(x.numpy(), y.numpy()) for x, y in data.decoded(
            paths, manifest, manifest.splits[split].count).batch(4096)]  # fmt: skip
        arrays[split] = (
            np.concatenate([x for x, _ in pairs]),
            np.concatenate([y for _, y in pairs]),
        )
    return {"manifest": manifest, **arrays}


def trial(arrays: dict, name: str, size: int, lr: float, epochs: int, eps: float = 0.0,
          aug: float = 0.0, seed: int = 42, warmup: float | None = None, batch: int = BATCH,
          stop: int = 0, ema: float = 0.0, wd: float = 0.0,
          flip: bool = False) -> dict:  # fmt: skip
    """One recipe: per-epoch validation and test accuracy and seconds.

    `warmup`: share of the steps in linear warmup (None: the project's); `stop`: end after this
    many epochs of the `epochs`-long schedule (0: run it all), to look at the start of a curve.
    """
    from components.training import models
    from components.training.models import (
        build_seed_cnn,
        classification_loss,
        learning_rate,
        mirror_averaged,
    )

    manifest = arrays["manifest"]
    keras.utils.set_random_seed(seed)
    model = build_seed_cnn(manifest.image_shape, manifest.num_classes, size, aug, seed)
    if flip:
        inputs = keras.Input(manifest.image_shape, dtype="uint8")
        flipped = keras.layers.RandomFlip("horizontal", seed=seed)(inputs)
        model = keras.Model(inputs, model(keras.ops.cast(flipped, "uint8")))
    images, labels = arrays["train"]
    steps = -(-len(labels) // batch) * epochs
    loss = classification_loss(eps, manifest.num_classes)
    share = models.WARMUP_SHARE if warmup is None else warmup
    optimizer = keras.optimizers.Adam(
        learning_rate("cosine", lr, steps, share), weight_decay=wd or None,
        use_ema=bool(ema), ema_momentum=ema or 0.99,
    )  # fmt: skip
    model.compile(optimizer, loss, metrics=["accuracy"])
    record = {"name": name, "size": size, "lr": lr, "epochs": epochs, "eps": eps, "aug": aug,
              "warmup": share, "batch": batch, "ema": ema, "wd": wd, "flip": flip, "val": [],
              "test": [], "val_tta": [], "test_tta": [], "seconds": []}  # fmt: skip

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.averaged = mirror_averaged(self.model)  # as the training step evaluates

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            record["seconds"].append(round(time.perf_counter() - self.started, 1))
            record["val"].append(round(float(logs["val_accuracy"]), 4))
            test = self.model.evaluate(*arrays["test"], batch_size=512, verbose=0)[1]
            record["test"].append(round(float(test), 4))
            for key, split in (("val_tta", "validation"), ("test_tta", "test")):
                images, labels = arrays[split]
                probs = self.averaged.predict(images, batch_size=512, verbose=0)
                record[key].append(round(float(np.mean(np.argmax(probs, -1) == labels)), 4))
            keys = ("seconds", "val", "test", "val_tta", "test_tta")
            print(name, epoch + 1, *(record[k][-1] for k in keys))

    with LoadMonitor() as monitor:
        model.fit(images, labels, batch_size=batch, epochs=stop or epochs, verbose=0,
                  validation_data=arrays["validation"],
                  callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] * bool(ema)
                  + [Record()])  # fmt: skip
    record["load"] = monitor.record
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", help="JSON list of trials (see the module's doc)")
    parser.add_argument("--source", default="auto")
    args = parser.parse_args(argv)
    from bench.__main__ import machine_slug
    from components.common.logging import configure

    configure("WARNING")
    keep_freed_memory()  # as the training step does
    arrays = split_arrays(prepare(args.source, 0))
    machine = machine_info()
    path = RESULTS / f"{machine_slug(machine)}.json"
    results = json.loads(path.read_text()) if path.exists() else {"trials": []}
    results.update(machine=machine, version=arrays["manifest"].version)
    for spec in json.loads(args.trials):
        results["trials"].append(
            {**trial(arrays, **spec), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
