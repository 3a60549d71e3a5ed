"""Benchmark: SIGTERM to exit of a transfer training process mid-epoch, per phase, at 150 px.

Spot preemption gives a pod 15 s between SIGTERM and SIGKILL. On SIGTERM the training step
finishes the running batch, uploads the newest epoch-end state when the store lacks it (one
save: the state was written at the epoch's end), and exits 143. This measures the worst case:
`--checkpoint-interval` holds uploads back, so the state of the last finished epoch is not in
the store yet and the SIGTERM must upload it. Per phase, one process:
- head (on cached features): SIGTERM half-way through epoch 3 (epoch 1 uploaded, 2 held back);
- fine-tune (unfrozen from mixed5, lean checkpoint): the same in the fine-tune phase.
Real Fashion-MNIST subset, generated random-init InceptionV3 weights (times and sizes only),
checkpoints in a store folder on local disk (a `gs://` upload adds the transfer time of the
size shown). The time is measured from the signal to the process's exit; nothing is asserted.

Run: python -m bench.bench_sigterm [--quick] [--json out.json]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import time
from pathlib import Path

from bench.bench_training import WORK
from bench.resume import (
    Training,
    generated_weights,
    load_average,
    now,
    prepared_subset,
    section_args,
)

GRACE_S = 15  # GKE spot: the first 15 s of the 30 s notice go to ordinary pods
INTERVAL_S = 3600  # uploads held back: SIGTERM has the newest epoch-end state to upload
SIGNAL_EPOCH = 3  # epoch 1 uploaded, epoch 2 written locally only, signalled during epoch 3


def _epoch_end(phase: str):
    """Matches the end of an epoch of `phase` (the log numbers epochs across phases)."""
    return lambda e: e.get("event") == "epoch_end" and e.get("phase") == phase


def _at(event: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(event["timestamp"])


def interrupt(phase: str, dataset: str, weights: Path, work: Path, args) -> dict:
    """Train until half-way through epoch SIGNAL_EPOCH of `phase`, SIGTERM, time the exit."""
    shutil.rmtree(work, ignore_errors=True)
    options = [
        "--dataset", dataset, "--output-dir", str(work / "out"), "--cache-dir",
        str(work / "cache"), "--checkpoint-dir", str(work / "store" / "checkpoints"),
        "--checkpoint-interval", str(INTERVAL_S), "--weights", str(weights),
        "--input-size", str(args.input_size), "--batch-size", str(args.batch_size),
        "--patience", "0", "--lr-decay-patience", "0", "--seed", "1",
    ]  # fmt: skip
    if phase == "head":
        options += ["--epochs", "50"]
    else:
        options += ["--epochs", "1", "--fine-tune-from", "mixed5", "--fine-tune-epochs", "50"]
    training = Training(*options)
    for _ in range(SIGNAL_EPOCH - 2):
        training.until(_epoch_end(phase))
    held_back = training.until(_epoch_end(phase))
    epoch_seconds = float(held_back["epoch_seconds"])
    time.sleep(epoch_seconds / 2)  # a benchmark, not a test: half-way through the next epoch
    load = load_average()
    signalled, signalled_at = time.perf_counter(), dt.datetime.now(dt.UTC)
    os.kill(training.process.pid, signal.SIGTERM)
    code = training.process.wait()
    seconds = time.perf_counter() - signalled
    _, _, events = training.finish()
    after = events[next(i for i, e in enumerate(events) if e is held_back) + 1 :]
    saved = [e for e in after if e.get("event") == "checkpoint_saved"]
    saved_at = _at(saved[-1]) if saved else None
    # What the time went to: each log event after the signal, seconds after it.
    timeline = [
        [e.get("event"), round((_at(e) - signalled_at).total_seconds(), 2)]
        for e in after
        if "timestamp" in e
    ]
    phase_dir = work / "store" / "checkpoints" / phase
    pointer = json.loads((phase_dir / "LATEST.json").read_text())
    uploaded = sum((phase_dir / pointer["folder"] / n).stat().st_size for n in pointer["files"])
    steps = -(-args.train_images // args.batch_size)
    figures = {
        "phase": phase,
        "epoch_of_signal": SIGNAL_EPOCH,
        "epoch_seconds": round(epoch_seconds, 2),
        "batch_seconds": round(epoch_seconds / steps, 2),
        "uploaded_epoch": saved[-1]["epoch"] if saved else None,
        "store_epoch": pointer["epoch"],
        "uploaded_mib": round(uploaded / 2**20, 1),
        "sigterm_to_saved_s": round((saved_at - signalled_at).total_seconds(), 2)
        if saved_at
        else None,
        "sigterm_to_last_log_s": timeline[-1][1] if timeline else None,
        "sigterm_to_exit_s": round(seconds, 2),
        "after_sigterm": timeline,
        "exit_code": code,
        "load": load,
    }
    print(json.dumps(figures), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> dict:
    """Both phases, one process each; print the figures as JSON."""
    args = section_args("python -m bench.bench_sigterm", argv)
    root = WORK / "sigterm"
    from components.common.dataset import load_manifest

    dataset = prepared_subset(
        args.source, root, root / "store", train=40 if args.quick else 320, test=16
    )
    args.train_images = load_manifest(dataset).splits["train"].count
    weights = generated_weights(root / "inception_v3_random.weights.h5", args.input_size)
    phases = [interrupt(p, dataset, weights, root / p, args) for p in ("head", "fine_tune")]
    figures = {
        "load_after": load_average(),
        "date": now(),
        "input_size": args.input_size,
        "interval_s": INTERVAL_S,
        "grace_s": GRACE_S,
        "train_images": args.train_images,
        "batch": args.batch_size,
        "phases": phases,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
