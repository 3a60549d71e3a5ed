"""Benchmark: checkpoint size and save time of the transfer model at 150 px, full against lean.

A full checkpoint is `model.save_weights`: every weight of the model plus the optimizer's state.
A lean one (components/training/checkpoint.py:save_lean, what the fine-tune phase writes) holds
only what training changes: the trainable weights, the optimizer's state and the layers'
random-generator state; the frozen rest is rebuilt from the verified weights file. Per phase:
- head phase (on cached features): the head model (Flatten, Dense 1024, Dropout, Dense);
- fine-tune phase: the full model, backbone cut at mixed7, unfrozen from mixed5.
Random-init backbone (sizes and times do not depend on the weights' values). Each save is
timed `--repeats` times (the best is kept); the machine's load average is recorded before and
after, as the machine may be shared.

Run: python -m bench.bench_checkpoint [--quick] [--input-size 150] [--json out.json]
(`--quick`: 75 px, one repeat; its figures only prove the benchmark runs.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

CUT_LAYER = "mixed7"
FINE_TUNE_FROM = "mixed5"


def _timed(save, path: Path, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        save(path)
        times.append(round(time.perf_counter() - started, 2))
    mib = round(path.stat().st_size / 2**20, 1)
    path.unlink()
    return {"mib": mib, "seconds": min(times), "all_seconds": times}


def measure(model, folder: Path, name: str, repeats: int = 1) -> dict:
    """Full `save_weights` against an npz of the lean variables, for a compiled model."""
    import keras

    from components.training.checkpoint import save_lean

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    full = _timed(lambda p: model.save_weights(p), folder / f"{name}.weights.h5", repeats)
    lean = _timed(lambda p: save_lean(model, p), folder / f"{name}.lean.npz", repeats)
    params = {
        "trainable": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "total": int(model.count_params()),
    }
    return {"full": full, "lean": lean, "params": params}


def main(argv: list[str] | None = None) -> dict:
    """Measure both phases and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_checkpoint")
    parser.add_argument("--input-size", type=int, default=0, help="default 150 (quick: 75)")
    parser.add_argument("--repeats", type=int, default=0, help="default 2 (quick: 1)")
    parser.add_argument("--quick", action="store_true", help="75 px, one repeat")
    parser.add_argument("--source", default="auto", help="unused: no data is read")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    args.input_size = args.input_size or (75 if args.quick else 150)
    repeats = args.repeats or (1 if args.quick else 2)
    from bench.resume import load_average, now
    from components.training.models import build_transfer, unfreeze_from

    load_before = load_average()

    built = build_transfer(
        image_shape=(28, 28, 1),
        num_classes=10,
        input_size=args.input_size,
        augmentation=0.0,
        seed=0,
        dense_units=1024,
        dropout_rate=0.2,
        weights=None,
        cut_layer=CUT_LAYER,
        model="inception_v3",
    )
    figures = {"input_size": args.input_size, "repeats": repeats, "load_before": load_before}
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as tmp:
        figures["head"] = measure(built.head, Path(tmp), "head", repeats)
        unfreeze_from(built.backbone, FINE_TUNE_FROM)
        figures["fine_tune"] = measure(built.full, Path(tmp), "fine_tune", repeats)
    figures["load_after"] = load_average()
    figures["date"] = now()
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
