"""Preemption: training killed at random points resumes, loses at most one partial epoch, and
ends exactly where an uninterrupted run ends (weights, metrics and history), for both models and
both phases; a cut-off checkpoint never poisons the resume; SIGTERM uploads the newest state and
exits 143; and the same through the pipeline in kfp.local with the step's retry policy.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from components.common import storage
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from tests.conftest import REPO, make_idx_dataset

pytestmark = pytest.mark.slow
EPOCHS = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("preempt-data")
    source = make_idx_dataset(root / "idx", n_train=400, n_test=60)
    return prep(PrepConfig(store=str(root / "store"), source=str(source))).uri


class Run:
    """A training CLI process whose JSON log lines are collected as they come."""

    def __init__(
        self, dataset: str, out: Path, checkpoint_dir: str, epochs: int = EPOCHS, *options: str
    ):
        command = [
            sys.executable, "-m", "components.training", "cnn", "--dataset", dataset,
            "--output-dir", str(out), "--cache-dir", str(out.parent / "cache"),
            "--checkpoint-dir", checkpoint_dir, "--input-size", "32", "--batch-size", "16",
            "--patience", "0", "--epochs", str(epochs), "--log-format", "json", *options,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.events: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))

    def named(self, event: str) -> list[dict]:
        return [e for e in list(self.events) if e.get("event") == event]

    def wait_for(self, event: str, count: int = 1, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(self.named(event)) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {event} before exit {self.process.returncode}: {self.events}")
            time.sleep(0.02)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.reader.join(10)

    def finish(self, timeout: float = 300) -> int:
        self.process.wait(timeout)
        self.reader.join(10)
        return self.process.returncode


# Early stopping is on (and, for the transfer model, the learning-rate plateau; the CNN follows its
# default cosine schedule, a function of the step counter), so their state must survive the kills.
RECIPE = ("--patience", "2", "--lr-decay-patience", "1", "--seed", "7")


def assert_same_result(done: Path, expected: Path) -> None:
    """Same metrics, history and final weights as the uninterrupted run (within 1e-6)."""
    import keras

    metrics, reference = (json.loads((p / "metrics.json").read_text()) for p in (done, expected))
    for key in ("test_accuracy", "test_loss", "epochs_run"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    history, reference = (json.loads((p / "history.json").read_text()) for p in (done, expected))
    assert history["epoch"] == reference["epoch"] and history["phase"] == reference["phase"]
    for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
        assert history[key] == pytest.approx(reference[key], abs=1e-6), key
    weights = [keras.saving.load_model(p / "model.keras").get_weights() for p in (done, expected)]
    for got, want in zip(*weights, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_random_sigkills_resume_with_at_most_one_repeated_epoch(dataset, tmp_path):
    baseline = Run(dataset, tmp_path / "baseline", str(tmp_path / "ckpt-baseline"), EPOCHS, *RECIPE)
    assert baseline.finish() == 0

    rng = random.Random(20261129)
    checkpoint_dir, out = str(tmp_path / "ckpt"), tmp_path / "out"
    kills, runs = 0, []
    while True:
        run = Run(dataset, out, checkpoint_dir, EPOCHS, *RECIPE)
        runs.append(run)
        if kills < 3:
            run.wait_for("epoch_end")
            # A random point inside a later epoch, or right after an epoch's end.
            time.sleep(rng.uniform(0.0, 1.5))
            if run.process.poll() is None:
                run.kill()
                kills += 1
                continue
        assert run.finish() == 0, run.events[-5:]
        break
    assert kills == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] is True
    for killed, resumed in itertools.pairwise(runs):
        finished = [e["epoch"] for e in killed.named("epoch_end")]
        restored = resumed.named("checkpoint_restored")
        restored_epoch = restored[0]["epoch"] if restored else 0
        # At most the epoch in flight is lost, plus one whose end was logged but not yet saved.
        assert max(finished, default=0) - restored_epoch <= 1, (finished, restored_epoch)
    # Exactly where the uninterrupted run ends.
    assert_same_result(out, tmp_path / "baseline")


def transfer_run(dataset: str, out: Path, checkpoint_dir: str, weights: str) -> Run:
    """A transfer run with both phases: the head on cached features, then fine-tuning.

    `weights`: a (generated) pretrained weights file; without one the backbone would train
    from scratch, in one phase.
    """
    options = (
        "--model", "inception_v3", "--weights-uri", weights, "--input-size", "75",
        "--cut-layer", "mixed1", "--fine-tune-from", "mixed0", "--fine-tune-epochs", "2", *RECIPE,
    )  # fmt: skip
    return Run(dataset, out, checkpoint_dir, 3, *options)


def test_transfer_killed_in_each_phase_ends_exactly_as_an_uninterrupted_run(
    dataset, tmp_path, inception_weights
):
    baseline = transfer_run(
        dataset, tmp_path / "baseline", str(tmp_path / "ckpt-baseline"), inception_weights
    )
    assert baseline.finish(timeout=600) == 0
    checkpoint_dir, out = str(tmp_path / "ckpt"), tmp_path / "out"
    rng = random.Random(20261130)
    for phase in ("head", "fine_tune"):
        run = transfer_run(dataset, out, checkpoint_dir, inception_weights)
        deadline = time.monotonic() + 600
        while not any(e.get("phase") == phase for e in run.named("epoch_end")):
            if run.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {phase} epoch before exit {run.process.returncode}")
            time.sleep(0.02)
        # A random point after the phase's first epoch: inside the next epoch, a checkpoint
        # upload, or the phase's end.
        time.sleep(rng.uniform(0.0, 1.5))
        if run.process.poll() is None:
            run.kill()
    rerun = transfer_run(dataset, out, checkpoint_dir, inception_weights)
    assert rerun.finish(timeout=600) == 0, rerun.events[-5:]
    assert rerun.named("phase_already_done")  # the head phase was not trained again
    assert_same_result(out, tmp_path / "baseline")


def test_checkpoint_cut_off_mid_write_does_not_poison_the_resume(dataset, tmp_path):
    checkpoint_dir, out = str(tmp_path / "ckpt"), tmp_path / "out"
    head = Path(checkpoint_dir) / "head"
    run = Run(dataset, out, checkpoint_dir)
    run.wait_for("checkpoint_saved")
    # Kill as the next checkpoint upload starts: a state folder that LATEST does not name.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.process.poll() is None:
        latest = json.loads((head / "LATEST.json").read_text())["folder"]
        if any(p.name != latest for p in head.glob("state-*")):
            run.kill()
            break
        time.sleep(0.001)
    else:
        run.kill()
    pointer = json.loads((head / "LATEST.json").read_text())
    # Whatever the kill left, add the remains of an upload cut off half-way.
    good = head / pointer["folder"]
    torn = head / "state-0999-deadbeef"
    torn.mkdir(exist_ok=True)
    weights = (good / "latest.weights.h5").read_bytes()
    (torn / "latest.weights.h5").write_bytes(weights[: len(weights) // 2])
    rerun = Run(dataset, out, checkpoint_dir)
    assert rerun.finish() == 0, rerun.events[-5:]
    assert rerun.named("checkpoint_restored")[0]["epoch"] == pointer["epoch"]
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == list(range(1, EPOCHS + 1))


def test_sigterm_uploads_the_newest_state_and_exits_143_on_gcs(dataset, tmp_path, gcs_bucket):
    checkpoint_dir = f"{gcs_bucket}/checkpoints/cnn"
    # Uploads at most hourly: only the first epoch's state reaches the store before SIGTERM.
    run = Run(dataset, tmp_path / "out", checkpoint_dir, 100, "--checkpoint-interval", "3600")
    run.wait_for("epoch_end", count=3)
    before = json.loads(storage.read_text(f"{checkpoint_dir}/head/LATEST.json"))
    run.process.send_signal(signal.SIGTERM)
    assert run.finish(timeout=120) == 143
    after = json.loads(storage.read_text(f"{checkpoint_dir}/head/LATEST.json"))
    assert before["epoch"] == 1 and after["epoch"] >= 3 and not after["done"]
    assert run.named("sigterm_received")
    # The saved state resumes.
    rerun = Run(dataset, tmp_path / "out", checkpoint_dir, epochs=after["epoch"] + 1)
    assert rerun.finish() == 0
    assert rerun.named("checkpoint_restored")[0]["epoch"] == after["epoch"]


def executor_pids(marker: str) -> list[int]:
    """kfp.local task processes whose command line mentions `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "executor_main" in cmdline and marker in cmdline:
            pids.append(int(entry.name))
    return pids


def test_pipeline_task_killed_in_kfp_local_retries_and_resumes(tmp_path, monkeypatch):
    from pipelines import pipeline as pipeline_module
    from pipelines.local import run_local

    fast = {key: (2, "1s", 1.0, "2s") for key in pipeline_module.RETRIES}
    monkeypatch.setattr(pipeline_module, "RETRIES", fast)
    source = make_idx_dataset(tmp_path / "idx", n_train=400, n_test=40, size=8)
    store = tmp_path / "store"
    killed = []

    def killer() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            for latest in store.glob("checkpoints/*/seed_cnn/head/LATEST.json"):
                with_epoch = json.loads(latest.read_text())
                pids = executor_pids("seed_cnn")
                if with_epoch["epoch"] >= 1 and pids:
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    killed.append(with_epoch["epoch"])
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    outputs = run_local(
        pipeline_module.build_pipeline(retries=True),
        {
            "store": str(store), "source": str(source), "weights_url": "none",
            "cnn_epochs": 5, "transfer_epochs": 1, "batch_size": 16, "cnn_input_size": 16,
            "transfer_input_size": 75, "cut_layer": "mixed0",
        },
        pipeline_root=str(tmp_path / "root"),
    )  # fmt: skip
    watcher.join(5)
    assert killed, "the train-cnn task was never killed"
    run_dir = Path(outputs.run_dir)
    (task_dir,) = run_dir.glob("for-loop-*/train-cnn")  # the CNN loop's one seed
    history = json.loads((task_dir / "history").read_text())
    assert history["epoch"] == [1, 2, 3, 4, 5]
    trained = json.loads((task_dir / "trained_model" / "metrics.json").read_text())
    assert trained["resumed"] is True and trained["epochs_run"] == 5
    comparison = json.loads(Path(outputs.metrics_json).read_text())
    assert comparison["cnn_test_accuracy"] > 0
