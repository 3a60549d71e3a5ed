"""`checkpoint_interval`: a pipeline parameter that reaches both trainings, outside the result."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from kfp.dsl import Artifact, ClassificationMetrics, Metrics, Model

from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from components.training import artifacts
from components.training import component as training_component
from pipelines.cli import main
from tests.conftest import make_idx_dataset

IMAGES = ["--cpu-image", "registry.example/tl-cpu:abc", "--gpu-image", "registry.example/tl-gpu:a"]


def compile_spec(path: Path, *params: str) -> dict:
    argv = ["compile", "--output", str(path), *IMAGES, "--store", "gs://bucket/tl"]
    assert main([*argv, *(arg for p in params for arg in ("--param", p))]) == 0
    return next(yaml.safe_load_all(path.read_text()))


def test_compiles_with_its_default_and_feeds_both_trainings(tmp_path):
    spec = compile_spec(tmp_path / "p.yaml")
    parameter = spec["root"]["inputDefinitions"]["parameters"]["checkpoint_interval"]
    assert parameter == {"defaultValue": 0.0, "isOptional": True, "parameterType": "NUMBER_DOUBLE"}
    # Every DAG's tasks: the root's, and the training loops' (ParallelFor bodies).
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    tasks = {name: task for dag in dags for name, task in dag["tasks"].items()}
    for name in ("train-cnn", "train-transfer"):
        given = tasks[name]["inputs"]["parameters"]["checkpoint_interval"]
        # In a loop's body a pipeline parameter arrives as the loop's input of that name.
        assert given["componentInputParameter"] in (
            "checkpoint_interval",
            "pipelinechannel--checkpoint_interval",
        ), name
    for name in ("data-prep", "weights", "compare"):
        assert "checkpoint_interval" not in tasks[name]["inputs"].get("parameters", {})
    baked = compile_spec(tmp_path / "q.yaml", "checkpoint_interval=600")
    value = baked["root"]["inputDefinitions"]["parameters"]["checkpoint_interval"]["defaultValue"]
    assert value == 600.0


def test_it_is_not_part_of_the_checkpoint_key(tmp_path):
    assert "checkpoint_interval" not in artifacts.CHECKPOINT_KEYS
    every_epoch = artifacts.config(work=tmp_path, store="s", dataset_uri="d")
    hourly = artifacts.config(work=tmp_path, store="s", dataset_uri="d", checkpoint_interval=3600)
    assert (every_epoch.checkpoint_interval, hourly.checkpoint_interval) == (0.0, 3600.0)
    assert hourly.checkpoint_dir == every_epoch.checkpoint_dir  # a retry with another one resumes


def test_the_training_task_trains_with_it(tmp_path, monkeypatch):
    import tempfile

    # As on the cluster: the scratch volume mounted (the task's TMPDIR), not the scratch arm.
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # restored after the test
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(training_component.SCRATCH_ENV, str(tmp_path / "scratch"))
    source = make_idx_dataset(tmp_path / "idx", n_train=60, n_test=20)
    store = tmp_path / "store"
    dataset = prep(PrepConfig(store=str(store), source=str(source))).uri
    outputs = {
        "trained_model": Model(uri=str(tmp_path / "model")),
        "metrics": Metrics(uri=str(tmp_path / "metrics.json")),
        "classification": ClassificationMetrics(uri=str(tmp_path / "classification")),
        "history": Artifact(uri=str(tmp_path / "history.json")),
    }
    training_component.train(
        **outputs,
        dataset_uri=dataset,
        store=str(store),
        input_size=16,
        epochs=2,
        batch_size=16,
        checkpoint_interval=3600.0,
    )
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["checkpoint_interval"], config["scratch"]) == (3600.0, False)
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    default = artifacts.config(
        work=tmp_path, store=str(store), dataset_uri=dataset, input_size=16, epochs=2, batch_size=16
    )  # the same key as without the interval
    assert metrics["checkpoint_dir"] == default.checkpoint_dir
    # Uploads held back by the interval: the phase's end still publishes the finished state.
    pointer = json.loads((Path(default.checkpoint_dir) / "head" / "LATEST.json").read_text())
    assert (pointer["epoch"], pointer["done"]) == (2, True)
