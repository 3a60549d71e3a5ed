"""The whole pipeline in kfp.local (SubprocessRunner), as `python -m pipelines run` runs it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from tests.conftest import REPO, make_idx_dataset
from tests.http_server import LoopbackServer

ANSI = re.compile(r"\x1b\[[0-9;]*m")
INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> bytes:
    """A randomly initialised InceptionV3 no-top, in the official file's legacy .h5 layout."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(3)
    model = keras.applications.InceptionV3(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("weights") / INCEPTION_FILE
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    keras.backend.clear_session()
    return path.read_bytes()


def run_cli(*args: str, keras_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_HOME": str(keras_home)}  # an empty Keras cache
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def printed_path(stdout: str, label: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    return Path(line.split(":", 1)[1].strip())


def test_pipeline_end_to_end_with_served_weights(tmp_path, inception_weights):
    source = make_idx_dataset(tmp_path / "idx", n_train=60, n_test=20, size=8)
    store = tmp_path / "store"
    with LoopbackServer() as server:
        url = server.add(f"/{INCEPTION_FILE}", inception_weights)
        result = run_cli(
            "--store", str(store), "--source", str(source), "--epochs", "1",
            "--weights", url,
            "--param", f"weights_sha256={hashlib.sha256(inception_weights).hexdigest()}",
            "--param", "cut_layer=mixed0", "--param", "batch_size=16",
            "--param", "cnn_input_size=16", "--param", "transfer_input_size=75",
            "--param", "scratch=true",  # the ParallelFor arms: CNN, pretrained and scratch
            keras_home=tmp_path / "keras",
        )  # fmt: skip
        requests = server.count(f"/{INCEPTION_FILE}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert requests >= 1
    out = result.stdout
    assert "Pipeline 'transfer-learning' succeeded." in out

    report = printed_path(out, "Report (HTML):")
    summary = printed_path(out, "Summary (Markdown):")
    metrics = json.loads(printed_path(out, "Metrics (JSON):").read_text())
    run_dir = printed_path(out, "All task outputs:")
    html = report.read_text()
    assert report.suffix == ".html" and html.lstrip().lower().startswith("<!doctype html")
    assert "data:image/png;base64," in html
    assert "Champion" in html or "champion" in html
    assert summary.read_text().strip()
    for role in ("cnn", "transfer", "scratch"):
        assert 0.0 <= metrics[f"{role}_test_accuracy"] <= 1.0
        assert metrics[f"{role}_params_total"] > 0
    assert metrics["transfer_pretrained"] == 1
    for gain in ("architecture_gain", "pretraining_gain"):  # the gain split, each tested
        assert metrics[gain] == pytest.approx(
            metrics["transfer_test_accuracy" if gain[0] == "p" else "scratch_test_accuracy"]
            - metrics["scratch_test_accuracy" if gain[0] == "p" else "cnn_test_accuracy"]
        )
        assert 0.0 <= metrics[f"{gain}_p_value"] <= 1.0
    assert "Where the gain comes from" in summary.read_text()

    # The trainings ran in ParallelFor iterations; compare collected all three.
    trained = {
        folder.parent.name: folder for folder in run_dir.glob("for-loop-*/train-*/trained_model")
    }
    written = {}
    for folder in run_dir.glob("for-loop-*/train-*/trained_model"):
        record = json.loads((folder / "metrics.json").read_text())
        written[record["arm"]] = record
        assert (folder / "model.keras").is_file() and (folder / "saved_model").is_dir()
        assert record["dataset_uri"].startswith(str(store.resolve() / "datasets"))
        logged = json.loads((folder.parent / "metrics").read_text())
        assert logged["test_accuracy"] == pytest.approx(record["test_accuracy"])
        assert json.loads((folder.parent / "history").read_text())["epoch"] == [1]
    assert trained and sorted(written) == ["cnn", "pretrained", "scratch"]
    assert written["cnn"]["model"] == "seed_cnn"
    assert written["pretrained"]["model"] == written["scratch"]["model"] == "inception_v3"
    assert written["pretrained"]["pretrained"] is True
    assert written["pretrained"]["weights_sha256"] == hashlib.sha256(inception_weights).hexdigest()
    assert written["scratch"]["pretrained"] is False
    assert {record["seed"] for record in written.values()} == {written["cnn"]["seed"]}

    champion = json.loads((store / "champion" / "fashion_mnist.json").read_text())
    assert champion["model"] in ("seed_cnn", "inception_v3")
    assert list((store / "weights").glob("*/" + INCEPTION_FILE))


def test_failing_step_fails_the_run_and_shows_its_error(tmp_path):
    missing = tmp_path / "no-such-source"
    result = run_cli(
        "--store", str(tmp_path / "store"), "--source", str(missing), "--weights", "none",
        keras_home=tmp_path / "keras",
    )  # fmt: skip
    assert result.returncode == 1
    output = ANSI.sub("", result.stdout + result.stderr)
    assert str(missing) in output  # data prep's own message, from the task's log
    assert "finished with status FAILURE" in output
    assert "error: Pipeline 'transfer-learning' finished with status FAILURE" in result.stderr
    assert "Inner task failed: 'data-prep'" in result.stderr
    assert "succeeded" not in result.stdout
