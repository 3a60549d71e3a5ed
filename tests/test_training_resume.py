"""Training resume: SIGKILL mid-training then rerun resumes; SIGTERM saves and exits 143."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.common import storage
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from tests.conftest import REPO, make_idx_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("resume-data")
    source = make_idx_dataset(root / "idx", n_train=300, n_test=20)
    return prep(PrepConfig(store=str(root / "store"), source=str(source))).uri


def start(
    dataset: str, tmp_path: Path, checkpoint_dir: str, epochs: int, at_exit: Path | None = None
) -> subprocess.Popen:
    """`python -m components.training cnn ...`; the interpreter's teardown touches `at_exit`."""
    program = [sys.executable, "-m", "components.training"]
    if at_exit is not None:
        program = [
            sys.executable, "-c",
            "import atexit, pathlib, runpy; "
            f"atexit.register(pathlib.Path({str(at_exit)!r}).touch); "
            "runpy.run_module('components.training', run_name='__main__', alter_sys=True)",
        ]  # fmt: skip
    command = [
        *program, "cnn",
        "--dataset", dataset,
        "--output-dir", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"),
        "--checkpoint-dir", checkpoint_dir,
        "--input-size", "32", "--batch-size", "16", "--patience", "0",
        "--epochs", str(epochs), "--log-format", "json",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_epoch(checkpoint_dir: str, epoch: int, process: subprocess.Popen) -> dict:
    """Poll the store until the head phase's LATEST pointer reaches `epoch`."""
    latest = storage.join(checkpoint_dir, "head", "LATEST.json")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if storage.exists(latest):
            pointer = json.loads(storage.read_text(latest))
            if pointer["epoch"] >= epoch:
                return pointer
        if process.poll() is not None:
            pytest.fail(f"training exited early ({process.returncode}): {process.stdout.read()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("no checkpoint appeared")


def test_sigkill_then_rerun_resumes_from_the_saved_epoch(dataset, tmp_path, gcs_bucket):
    checkpoint_dir = f"{gcs_bucket}/checkpoints/cnn"
    epochs = 6
    first = start(dataset, tmp_path, checkpoint_dir, epochs)
    pointer = wait_for_epoch(checkpoint_dir, 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL
    assert not pointer["done"] and pointer["epoch"] < epochs
    assert not (tmp_path / "out" / "metrics.json").exists()

    second = start(dataset, tmp_path, checkpoint_dir, epochs)
    log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log
    restored = [json.loads(line) for line in log.splitlines() if '"checkpoint_restored"' in line]
    assert restored and restored[0]["epoch"] >= pointer["epoch"]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert history["epoch"] == list(range(1, epochs + 1))
    assert metrics["epochs_run"] == epochs and metrics["resumed"] is True
    # The rerun trained only the epochs that were missing.
    trained = [json.loads(line)["epoch"] for line in log.splitlines() if '"epoch_end"' in line]
    assert trained == list(range(restored[0]["epoch"] + 1, epochs + 1))
    # Kept, marked done, until the consumer of the outputs releases it (common.checkpoints).
    assert json.loads(storage.read_text(f"{checkpoint_dir}/head/LATEST.json"))["done"]


def test_sigterm_saves_a_checkpoint_and_exits_143(dataset, tmp_path):
    checkpoint_dir = str(tmp_path / "checkpoints")
    teardown = tmp_path / "teardown-ran"
    process = start(dataset, tmp_path, checkpoint_dir, epochs=50, at_exit=teardown)
    wait_for_epoch(checkpoint_dir, 1, process)
    process.send_signal(signal.SIGTERM)
    log, _ = process.communicate(timeout=60)
    assert process.returncode == 143, log
    assert '"sigterm_received"' in log
    # Saved, then exited without the interpreter's teardown (which can outlast the save).
    assert not teardown.exists()
    pointer = json.loads((Path(checkpoint_dir) / "head" / "LATEST.json").read_text())
    assert pointer["epoch"] >= 1 and not pointer["done"]
    saved = Path(checkpoint_dir) / "head" / pointer["folder"]
    assert (saved / "latest.weights.h5").stat().st_size > 0
    assert json.loads((saved / "state.json").read_text())["epoch"] == pointer["epoch"]
    assert not (tmp_path / "out" / "metrics.json").exists()


def component_script(
    outputs: dict, dataset: str, store: Path, *, before: str = "", **params
) -> str:
    """Python source calling the KFP training component as its executor would (`before` first)."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in params.items())
    return f"""
{before}
from kfp.dsl import Artifact, ClassificationMetrics, Metrics, Model
from components.training.component import train
train(
    trained_model=Model(uri={outputs["model"]!r}),
    metrics=Metrics(uri={outputs["metrics"]!r}),
    classification=ClassificationMetrics(uri={outputs["cm"]!r}),
    history=Artifact(uri={outputs["h"]!r}),
    dataset_uri={dataset!r},
    store={str(store)!r},
    {arguments},
)
"""


def test_the_kfp_component_exits_143_on_sigterm_and_publishes_nothing(dataset, tmp_path):
    """The cluster's path (KFP's executor calls the component function): SIGTERM after an epoch
    leaves the checkpoint in the store and ends the process with 143, so the task is retried."""
    store = tmp_path / "store"
    outputs = {name: str(tmp_path / "outputs" / name) for name in ("model", "metrics", "cm", "h")}
    script = component_script(outputs, dataset, store, input_size=32, batch_size=16, epochs=50)
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not list(store.glob("checkpoints/*/seed_cnn/head/LATEST.json")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"no checkpoint before exit ({process.returncode}): {process.stdout.read()}"
            )
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    log, _ = process.communicate(timeout=120)
    assert process.returncode == 143, log[-3000:]
    (latest,) = store.glob("checkpoints/*/seed_cnn/head/LATEST.json")
    pointer = json.loads(latest.read_text())
    assert pointer["epoch"] >= 1 and not pointer["done"]
    assert not any(Path(path).exists() for path in outputs.values())  # nothing published


@pytest.mark.parametrize("after", ["returns", "raises"])
def test_a_finished_kfp_task_is_not_failed_by_a_crash_in_teardown(dataset, tmp_path, after):
    """As KFP's executor process: once the outputs are written, a crash during the interpreter's
    teardown (os.abort here, registered first so it would run last) does not fail the task; an
    exception raised after the component returned still fails it."""
    outputs = {name: str(tmp_path / "outputs" / name) for name in ("model", "metrics", "cm", "h")}
    as_executor = (
        "import atexit, importlib.machinery, os, sys\n"
        'sys.modules["__main__"].__spec__ = importlib.machinery.ModuleSpec('
        '"kfp.dsl.executor_main", None)\n'
        "atexit.register(os.abort)  # a teardown crash"
    )
    script = component_script(
        outputs, dataset, tmp_path / "store", before=as_executor, input_size=16, batch_size=32,
        epochs=1,
    )  # fmt: skip
    if after == "raises":
        script += 'raise RuntimeError("writing the executor output failed")\n'
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert Path(outputs["model"], "metrics.json").is_file()
    if after == "returns":
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert done.returncode != 0 and "writing the executor output failed" in done.stderr
