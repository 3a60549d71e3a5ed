"""Benchmark: a second transfer run that changes only the head's learning rate, against the first.

Two runs of the training step, each its own process on an empty local cache (a fresh pod), with
the same store: the first computes the frozen backbone's features over the training and
validation images and publishes them under `<store>/features/...`; the second, with another
learning rate, downloads them and runs no backbone pass over those images. Both evaluate the
test split through the whole model (the backbone included) and write checkpoints to the store,
as the pipeline's task does. Real Fashion-MNIST (a subset, for a few minutes on 2 cores) and
generated random-init InceptionV3 weights: the ImageNet file cannot be downloaded here, and
the times do not depend on the weights' values.

Run: python -m bench.bench_rerun [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.bench_training import WORK
from bench.resume import (
    Training,
    count,
    generated_weights,
    load_average,
    now,
    prepared_subset,
    section_args,
)

LEARNING_RATES = (1e-3, 3e-4)


def one_run(dataset: str, store: Path, weights: Path, work: Path, lr: float, args) -> dict:
    """One training run; its wall time, feature time and backbone passes."""
    shutil.rmtree(work, ignore_errors=True)
    load = load_average()
    training = Training(
        "--dataset", dataset, "--output-dir", str(work / "out"), "--cache-dir",
        str(work / "cache"), "--feature-store", str(store), "--checkpoint-dir",
        str(store / "checkpoints" / f"lr-{lr}"), "--weights", str(weights),
        "--input-size", str(args.input_size), "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--learning-rate", str(lr), "--seed", "1",
    )  # fmt: skip
    code, seconds, events = training.finish()
    if code != 0:
        raise SystemExit(f"training (learning rate {lr}) failed with exit status {code}")
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    figures = {
        "learning_rate": lr,
        "wall_s": round(seconds, 1),
        "feature_s": round(float(metrics.get("feature_seconds") or 0.0), 1),
        "backbone_passes": count(events, "features_extracted"),
        "store_hits": count(events, "features_store_hit"),
        "test_accuracy": metrics.get("test_accuracy"),
        "load": load,
    }
    print(json.dumps(figures), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> dict:
    """The two runs, side by side; print the figures as JSON."""
    args = section_args("python -m bench.bench_rerun", argv)
    args.epochs = 1 if args.quick else 2
    train, test = (40, 16) if args.quick else (1500, 300)
    root = WORK / "rerun"
    store = root / "store"
    shutil.rmtree(store, ignore_errors=True)  # no features from an earlier run
    from components.common.dataset import load_manifest

    dataset = prepared_subset(args.source, root, store, train, test)
    splits = load_manifest(dataset).splits
    weights = generated_weights(root / "inception_v3_random.weights.h5", args.input_size)
    first, second = (
        one_run(dataset, store, weights, root / f"run-{i}", lr, args)
        for i, lr in enumerate(LEARNING_RATES)
    )
    figures = {
        "input_size": args.input_size,
        "epochs": args.epochs,
        "batch": args.batch_size,
        "images": {name: splits[name].count for name in ("train", "validation", "test")},
        "first": first,
        "second": second,
        "second_vs_first": round(second["wall_s"] / first["wall_s"], 2),
        "load_after": load_average(),
        "date": now(),
    }
    shutil.rmtree(store, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
