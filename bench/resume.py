"""Shared parts of the checkpoint, SIGTERM and rerun benchmarks, and their report section.

- `load_average`: the machine's load with the figures (these runs share their machine);
- `generated_weights`: a randomly initialised InceptionV3 (no top) saved with `save_weights`,
  the stand-in for the ImageNet file, which cannot be downloaded here (speed and sizes only);
- `fmnist_subset`: the first N images of each real Fashion-MNIST split, as IDX files;
- `Training`: a training step as its own process, its JSON log events read as they come.
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.report import table

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
SPLITS = {"train": "train", "test": "t10k"}


def now() -> str:
    """The time of a measurement, UTC (a partial `--only` run keeps older sections' figures)."""
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def generated_weights(path: Path, input_size: int = 150) -> Path:
    """A random-init InceptionV3 without its top, saved with save_weights (made once)."""
    if path.exists():
        return path
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(input_size, input_size, 3)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.weights.h5")
    base.save_weights(str(tmp))
    tmp.replace(path)
    keras.backend.clear_session()
    return path


def _read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def section_args(prog: str, argv: list[str] | None):
    """The options of a training-process section: --quick, --source, --json.

    Sets `input_size` (150 px; quick: 75) and `batch_size` (32; quick: 16) from --quick.
    """
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--quick", action="store_true", help="75 px, a tiny subset")
    parser.add_argument("--source", default="auto", help="IDX folder; auto: Fashion-MNIST")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    args.input_size = 75 if args.quick else 150
    args.batch_size = 16 if args.quick else 32
    return args


def prepared_subset(source: str, root: Path, store: Path, train: int, test: int) -> str:
    """A Fashion-MNIST subset (fmnist_subset, in `root/idx`) prepared into `store`: its URI."""
    from components.data_prep.prep import PrepConfig
    from components.data_prep.prep import run as prep

    folder = fmnist_subset(source, root / "idx", train=train, test=test)
    return prep(PrepConfig(store=str(store), source=str(folder))).uri


def fmnist_subset(source: str, out: Path, train: int, test: int) -> Path:
    """The first `train` and `test` images of an IDX folder (`auto`: Debian's Fashion-MNIST)."""
    folder = FMNIST if source == "auto" else Path(source)
    out.mkdir(parents=True, exist_ok=True)
    for split, prefix in SPLITS.items():
        count = train if split == "train" else test
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            _write_idx(out / name, np.ascontiguousarray(_read_idx(folder / name)[:count]))
    return out


class Training:
    """`python -m components.training transfer ...` as a child process, with its log events."""

    def __init__(self, *args: str):
        command = [sys.executable, "-m", "components.training", "transfer", *args]
        command += ["--log-format", "json"]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                try:
                    self.events.put(json.loads(line))
                except json.JSONDecodeError:
                    continue
        self.events.put(None)

    def until(self, match) -> dict:
        """The next log event for which `match(event)` holds (error if the process ends first)."""
        while True:
            event = self.events.get()
            if event is None:
                code = self.process.wait()
                raise SystemExit(f"training ended (exit {code}) before the awaited log event")
            self.seen.append(event)
            if match(event):
                return event

    def finish(self) -> tuple[int, float, list[dict]]:
        """Wait for the end: exit status, wall seconds since start, every log event."""
        code = self.process.wait()
        seconds = time.perf_counter() - self.started
        while True:
            event = self.events.get()
            if event is None:
                break
            self.seen.append(event)
        return code, seconds, self.seen


def count(events: list[dict], name: str) -> int:
    """How many log events are called `name`."""
    return sum(event.get("event") == name for event in events)


def _when(section: dict) -> str:
    return f"; measured {section['date']}" if section.get("date") else ""


def render(s: dict) -> str:
    """The report's block for the checkpoint, SIGTERM and rerun sections (issue 16)."""
    out = []
    if {"checkpoint", "sigterm", "rerun"} & set(s):
        out.append(
            "\n### Resume and reruns: checkpoint saves, SIGTERM, stored features\n\n"
            "`python -m bench --only checkpoint,sigterm,rerun`. Each table records the machine's "
            "load average (1 minute) when it was measured: on a 2-core machine a load above 2 "
            "means the run was contended and its absolute times are inflated; compare figures "
            "side by side within one table.\n"
        )
    if "checkpoint" in s:
        c = s["checkpoint"]
        out.append(
            f"\n**Checkpoint size and save time** (InceptionV3 cut at mixed7, "
            f"{c['input_size']}px, Dense 1024 head, Adam; local disk; best of {c['repeats']}; "
            f"load average {c['load_before'][0]} before, {c['load_after'][0]} after"
            f"{_when(c)})\n\n"
        )
        rows = []
        for key, label in (("head", "head (on features)"), ("fine_tune", "fine-tune (mixed5 on)")):
            p = c[key]
            rows.append([
                label, f"{p['params']['trainable']:,} / {p['params']['total']:,}",
                f"{p['full']['mib']} MiB, {p['full']['seconds']} s",
                f"{p['lean']['mib']} MiB, {p['lean']['seconds']} s",
                round(p["full"]["mib"] / p["lean"]["mib"], 2),
            ])  # fmt: skip
        header = ["phase", "params trainable / total",
                  "before: save_weights (all weights and optimizer state)",
                  "after: lean (trainable + optimizer)", "size ratio"]  # fmt: skip
        out.append(table(header, rows))
    if "sigterm" in s:
        t = s["sigterm"]
        out.append(
            f"\n**SIGTERM to exit** (a training process mid-epoch at {t['input_size']}px, "
            f"checkpoint uploads held back by `checkpoint_interval` {t['interval_s']:.0f} s, so "
            "SIGTERM must upload the newest epoch-end state; store on local disk; grace period "
            f"{t['grace_s']} s{_when(t)})\n\n"
        )
        rows = [
            [p["phase"], p["epoch_of_signal"], p["batch_seconds"], p["uploaded_epoch"],
             p["uploaded_mib"], p.get("sigterm_to_saved_s"), p.get("sigterm_to_last_log_s"),
             p["sigterm_to_exit_s"], p["exit_code"], p["load"][0],
             "yes" if p["sigterm_to_exit_s"] < t["grace_s"] else "**no**"]
            for p in t["phases"]
        ]  # fmt: skip
        header = ["phase", "signalled in epoch", "seconds per batch",
                  "epoch uploaded on SIGTERM", "MiB uploaded", "SIGTERM to uploaded (s)",
                  "to the last log line (s)", "to exit (s)", "exit",
                  "load (1 min)", f"within {t['grace_s']} s"]  # fmt: skip
        out.append(table(header, rows))
        for p in t["phases"]:
            if p.get("after_sigterm"):
                steps = ", ".join(f"{name} {at} s" for name, at in p["after_sigterm"])
                out.append(f"\n{p['phase']}, log events after the signal: {steps}.\n")
    if "rerun" in s:
        r = s["rerun"]
        out.append(
            f"\n**A second transfer run, head learning rate changed** (real Fashion-MNIST subset:"
            f" {r['images']['train']} train, {r['images']['validation']} validation, "
            f"{r['images']['test']} test images; {r['input_size']}px, {r['epochs']} head epochs, "
            "each run its own process on an empty local cache, features in the store; generated "
            f"random-init InceptionV3 weights: times only{_when(r)})\n\n"
        )
        rows = [
            [f"{key} (learning rate {p['learning_rate']})", p["wall_s"], p["feature_s"],
             p["backbone_passes"], p["store_hits"], p["load"][0]]
            for key, p in (("first", r["first"]), ("second", r["second"]))
        ]  # fmt: skip
        header = ["run", "wall s", "features s", "splits through the backbone (train, "
                  "validation)", "features from the store", "load (1 min)"]  # fmt: skip
        out.append(table(header, rows))
        out.append(
            f"\nThe second run takes {r['second_vs_first']}x the first's wall time; both "
            "evaluate the test split through the whole model (backbone included).\n"
        )
    return "".join(out)
