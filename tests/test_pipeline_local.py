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
    for role in ("cnn", "transfer"):
        assert 0.0 <= metrics[f"{role}_test_accuracy"] <= 1.0
        assert metrics[f"{role}_params_total"] > 0
    assert metrics["transfer_pretrained"] == 1

    for task, model in (("train-cnn", "seed_cnn"), ("train-transfer", "inception_v3")):
        trained = run_dir / task / "trained_model"
        assert (trained / "model.keras").is_file() and (trained / "saved_model").is_dir()
        written = json.loads((trained / "metrics.json").read_text())
        assert written["model"] == model
        assert written["dataset_uri"].startswith(str(store.resolve() / "datasets"))
        logged = json.loads((run_dir / task / "metrics").read_text())
        assert logged["test_accuracy"] == pytest.approx(written["test_accuracy"])
        history = json.loads((run_dir / task / "history").read_text())
        assert history["epoch"] == [1]
    transfer = json.loads((run_dir / "train-transfer/trained_model/metrics.json").read_text())
    assert transfer["pretrained"] is True
    assert transfer["weights_sha256"] == hashlib.sha256(inception_weights).hexdigest()

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
