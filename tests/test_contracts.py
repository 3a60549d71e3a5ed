"""Contracts between the layers: one definition per parameter, one-way imports, typed results."""

import argparse
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.common import lineage
from components.common.cli import parser_for, run_main
from components.common.config import ConfigError, defaults, field_types, from_args
from components.common.result import TrainingMetrics
from components.compare import component as compare_component
from components.compare.config import CompareConfig
from components.data_prep import component as data_prep_component
from components.data_prep.config import PrepConfig
from components.training import artifacts as training_artifacts
from components.training import component as training_component
from components.training.__main__ import parse_args as training_args
from components.training.config import TrainConfig
from components.training.models import MODELS
from components.weights import component as weights_component
from components.weights.config import WeightsConfig
from pipelines.pipeline import build_pipeline
from tests.conftest import REPO

KFP_TYPES = {str: "String", int: "Integer", float: "Float", bool: "Boolean"}
CONFIGS = (PrepConfig, WeightsConfig, TrainConfig, CompareConfig)
# component -> (its config, parameters that are the component's own)
COMPONENTS = {
    "data_prep": (data_prep_component.make(), PrepConfig, set()),
    "weights": (weights_component.make(), WeightsConfig, set()),
    "train": (training_component.make(), TrainConfig, {"store"}),
    "compare": (compare_component.make(), CompareConfig, set()),
}
# pipeline parameter -> the config fields it feeds: (config, field, model or None)
PIPELINE = {
    "source": [(PrepConfig, "source", None)],
    "dataset_name": [(PrepConfig, "dataset_name", None), (CompareConfig, "dataset_name", None)],
    "limit": [(PrepConfig, "limit", None)],
    "val_fraction": [(PrepConfig, "val_fraction", None)],
    "image_size": [(PrepConfig, "image_size", None)],
    "backbones": [(WeightsConfig, "backbone", None)],  # a comma-separated list of them
    "weights_url": [(WeightsConfig, "weights_url", None)],
    "weights_sha256": [(WeightsConfig, "sha256", None)],
    "weights_md5": [(WeightsConfig, "md5", None)],
    "cnn_input_size": [(TrainConfig, "input_size", "seed_cnn")],
    "transfer_input_size": [(TrainConfig, "input_size", None)],  # 0: each backbone's default
    "cnn_epochs": [(TrainConfig, "epochs", "seed_cnn")],
    "transfer_epochs": [(TrainConfig, "epochs", "inception_v3")],
    "batch_size": [(TrainConfig, "batch_size", None)],
    "optimizer": [(TrainConfig, "optimizer", None)],
    "cnn_learning_rate": [(TrainConfig, "learning_rate", "seed_cnn")],
    "cnn_label_smoothing": [(TrainConfig, "label_smoothing", "seed_cnn")],
    "cnn_mirror": [(TrainConfig, "mirror", "seed_cnn")],
    "transfer_learning_rate": [(TrainConfig, "learning_rate", "inception_v3")],
    "augmentation": [(TrainConfig, "augmentation", None)],
    "cut_layer": [(TrainConfig, "cut_layer", None)],  # "": the chosen backbone's default
    "fine_tune_from": [(TrainConfig, "fine_tune_from", "inception_v3")],
    "fine_tune_epochs": [(TrainConfig, "fine_tune_epochs", "inception_v3")],
    "fine_tune_learning_rate": [(TrainConfig, "fine_tune_learning_rate", "inception_v3")],
    "margin": [(CompareConfig, "margin", None)],
    "seed": [(PrepConfig, "seed", None), (TrainConfig, "seed", None)],
    "checkpoint_interval": [(TrainConfig, "checkpoint_interval", None)],
}
PIPELINE_ONLY = {"store", "gpu_type", "gpu_count", "spot", "scratch", "seeds"}


def expected_default(config: type, name: str, model: str | None):
    """The config's default for a field; for a model, the value it resolves to (56, 20, ...)."""
    if model is None:
        return defaults(config)[name]
    return TrainConfig(dataset_uri="-", model=model).to_dict()[name]


def parameters(component) -> dict:
    """name -> (KFP type, default, optional) of a component's or pipeline's parameters."""
    inputs = component.component_spec.inputs or {}
    return {
        name: (spec.type, spec.default, spec.optional)
        for name, spec in inputs.items()
        if spec.type in KFP_TYPES.values()
    }


def kfp_form(config: type, name: str, default):
    """(KFP type, default as the config holds it) of a field: a tuple travels as its text."""
    kind = field_types(config)[name]
    if kind in KFP_TYPES:
        return KFP_TYPES[kind], default
    parse = {item.name: item for item in dataclasses.fields(config)}[name].metadata["parse"]
    return "String", parse(default) if isinstance(default, str) else default


def drift(component, config: type, own: set[str] = frozenset()) -> list[str]:
    """How a component's parameters differ from its config's fields (names, types, defaults)."""
    types, values = field_types(config), defaults(config)
    problems = []
    for name, (kind, default, optional) in parameters(component).items():
        if name in own:
            continue
        if name not in types:
            problems.append(f"{name}: not a {config.__name__} field")
            continue
        want_kind, parsed = kfp_form(config, name, default)
        if kind != want_kind:
            problems.append(f"{name}: {kind} vs {types[name].__name__}")
        elif optional and parsed != values[name]:
            problems.append(f"{name}: default {default!r} vs {values[name]!r}")
    return problems


def drifted_train(dataset_uri: str, epochs: int = 30, batch_size: float = 128.0, steps: int = 1):
    """A training component whose parameters drifted from TrainConfig."""


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_component_parameters_match_the_step_config(key):
    component, config, own = COMPONENTS[key]
    assert drift(component, config, own) == []


def test_the_drift_check_fails_on_a_changed_default_type_or_name():
    from kfp import dsl

    component = dsl.component(drifted_train, base_image="python:3.11")
    assert drift(component, TrainConfig) == [
        "epochs: default 30 vs 0",
        "batch_size: Float vs int",
        "steps: not a TrainConfig field",
    ]


def test_pipeline_parameters_match_the_step_configs():
    params = parameters(build_pipeline())
    assert set(params) == set(PIPELINE) | PIPELINE_ONLY
    for name, targets in PIPELINE.items():
        kind, default, _ = params[name]
        for config, field_name, model in targets:
            want_kind, parsed = kfp_form(config, field_name, default)
            assert kind == want_kind, name
            expected = expected_default(config, field_name, model)
            assert parsed == expected, f"pipeline {name}={default!r}, {field_name}={expected!r}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_every_parameter_has_help_and_an_unset_value_that_is_not_none(config):
    for item in dataclasses.fields(config):
        assert item.metadata.get("help"), f"{config.__name__}.{item.name} has no help"
        assert defaults(config)[item.name] is not None, f"{config.__name__}.{item.name} is None"


def test_cli_defaults_are_the_config_defaults():
    parser = parser_for("x", "x", PrepConfig)
    assert from_args(PrepConfig, parser.parse_args([])) == PrepConfig()
    args = parser.parse_args(["--name", "shoes", "--image-size", "4x6", "--class-names", "a,b"])
    config = from_args(PrepConfig, args)
    assert (config.dataset_name, config.image_size, config.class_names) == (
        "shoes",
        (4, 6),
        ("a", "b"),
    )
    compare = parser_for("x", "x", CompareConfig)
    parsed = compare.parse_args(["--cnn-dir", "a", "--transfer-dir", "b"])
    assert from_args(CompareConfig, parsed) == CompareConfig(cnn_dir="a", transfer_dir="b")


def test_training_cli_picks_the_model_by_step():
    cnn = training_args(["cnn", "--dataset-uri", "d", "--output-dir", "o"])
    transfer = training_args(["transfer", "--dataset", "d", "--output-dir", "o", "--epochs", "3"])
    assert from_args(TrainConfig, cnn) == TrainConfig(dataset_uri="d", output_dir="o")
    config = from_args(TrainConfig, transfer)
    assert (config.model, config.epochs, config.resolved_epochs) == ("inception_v3", 3, 3)
    assert config.resolved_cut_layer == "mixed7" and config.resolved_input_size == 150


def test_checkpoint_key_follows_the_resolved_parameters(tmp_path):
    cnn = MODELS["seed_cnn"]
    explicit = training_artifacts.config(
        work=tmp_path,
        store="s",
        dataset_uri="d",
        input_size=cnn.default_input_size,
        epochs=cnn.default_epochs,
        learning_rate=cnn.default_learning_rate,
        lr_schedule=cnn.default_schedule,
    )
    implied = training_artifacts.config(work=tmp_path, store="s", dataset_uri="d")
    other = training_artifacts.config(work=tmp_path, store="s", dataset_uri="d", seed=1)
    assert explicit.checkpoint_dir == implied.checkpoint_dir != other.checkpoint_dir
    smoothing = cnn.default_label_smoothing
    same = training_artifacts.config(work=tmp_path, store="s", dataset_uri="d",
                                     label_smoothing=smoothing)  # fmt: skip
    unsmoothed = training_artifacts.config(work=tmp_path, store="s", dataset_uri="d",
                                           label_smoothing=0.0)  # fmt: skip
    assert same.checkpoint_dir == implied.checkpoint_dir != unsmoothed.checkpoint_dir
    assert implied.checkpoint_dir.startswith("s/checkpoints/") and implied.output_dir.startswith(
        str(tmp_path)
    )


def test_every_training_parameter_but_the_store_and_interval_is_in_the_checkpoint_key():
    # A parameter the task takes but the key leaves out lets a run with another value resume
    # from this one's checkpoint.
    exempt = {"store", "checkpoint_interval"}  # where, and how often: not what
    taken = set(parameters(training_component.make())) - exempt
    assert taken <= set(training_artifacts.CHECKPOINT_KEYS), taken


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_layers_run_one_way():
    """pipelines -> components/<step> -> components/common; never back, never step to step."""
    root = REPO / "components"
    problems = []
    for path in sorted(root.rglob("*.py")):
        package = path.relative_to(root).parts[0]
        for name in _imports(path):
            if name == "pipelines" or name.startswith("pipelines."):
                problems.append(f"{path.relative_to(REPO)} imports {name}")
            parts = name.split(".")
            other = parts[1] if parts[0] == "components" and len(parts) > 1 else "common"
            if other not in ("common", package) and (root / other).is_dir():
                problems.append(f"{path.relative_to(REPO)} imports step {other}")
    assert problems == []


def test_the_layer_scan_sees_an_import_of_pipelines(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipelines.pipeline import build_pipeline\n")
    assert "pipelines.pipeline" in _imports(bad)


def test_training_help_prints_no_tensorflow_start_up_lines():
    done = subprocess.run(
        [sys.executable, "-m", "components.training", "cnn", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "--dataset-uri" in done.stdout and "--no-feature-cache" in done.stdout
    assert done.stderr == ""  # TensorFlow's C++ start-up lines go to stderr
    for line in ("cpu_feature_guard", "oneDNN", "absl::InitializeLog", "I0000"):
        assert line not in done.stdout


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(log_level="INFO", log_format="json", **values)


def test_bad_parameters_exit_1_and_bugs_keep_their_traceback(capsys):
    def bad_parameter():
        raise ConfigError("margin must be in [0, 1), got 2")

    def bug():
        raise ValueError("an unexpected bug")

    assert run_main("x", _args(), bad_parameter) == 1
    assert "error: margin must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="an unexpected bug"):
        run_main("x", _args(), bug)


def test_a_bad_parameter_on_a_step_cli_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "components.compare", "--cnn-dir", str(tmp_path),
         "--transfer-dir", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--margin", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "error: margin must be in [0, 1), got 2.0" in done.stderr
    assert "Traceback" not in done.stderr


def test_lineage_reads_the_baked_commit_else_git(monkeypatch):
    monkeypatch.setenv(lineage.COMMIT_ENV, "abc123")
    assert lineage.git_commit() == "abc123"
    monkeypatch.delenv(lineage.COMMIT_ENV)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert lineage.git_commit() == head
    record = lineage.lineage()
    assert record["version"] != lineage.UNKNOWN and "kfp" in record["libraries"]


def test_training_metrics_round_trip_and_model_metadata():
    record = TrainingMetrics(
        model="seed_cnn",
        display_name="CNN from scratch",
        class_names=("a", "b"),
        arm="cnn",
        test_accuracy=0.5,
        epochs_run=3,
        lineage={"version": "0.1.0", "git_commit": "abc", "libraries": {"keras": "3.1"}},
    )
    raw = json.loads(record.to_json())
    assert raw["class_names"] == ["a", "b"] and raw["test_accuracy"] == 0.5
    assert TrainingMetrics.from_dict(raw, "m.json") == record
    # A record written before arms existed gets its arm from the model and the weights.
    for model, pretrained, arm in [
        ("seed_cnn", False, "cnn"),
        ("inception_v3", True, "pretrained"),
        ("inception_v3", False, "scratch"),
    ]:
        old = {**raw, "model": model, "pretrained": pretrained}
        del old["arm"]
        assert TrainingMetrics.from_dict(old, "m.json").arm == arm
    metadata = record.model_metadata()
    assert metadata["git_commit"] == "abc" and metadata["keras_version"] == "3.1"
    assert metadata["test_accuracy"] == 0.5 and metadata["framework"] == "keras"


def test_weights_artifact_records_the_weights_and_the_code_version(tmp_path):
    from components.weights import artifacts as weights_artifacts
    from components.weights.fetch import WeightsResult

    class Model:
        def __init__(self):
            self.path = str(tmp_path / "weights" / "record.json")
            self.metadata = {}

    result = WeightsResult(
        uri="s/weights/ab/w.h5", sha256="ab", size=3, source="https://h/w.h5",
        backbone="inception_v3", pretrained=True, cache_hit=False, md5="cd", filename="w.h5",
    )  # fmt: skip
    artifact = Model()
    assert weights_artifacts.publish(result, artifact) == ("s/weights/ab/w.h5", True)
    assert json.loads(Path(artifact.path).read_text())["sha256"] == "ab"
    assert artifact.metadata["git_commit"] == lineage.lineage()["git_commit"]
    assert artifact.metadata["kfp_version"] == lineage.lineage()["libraries"]["kfp"]


@pytest.mark.parametrize(("level", "expected"), [("INFO", "2"), ("WARNING", "2"), ("DEBUG", "0")])
def test_native_logs_are_quiet_unless_debug(monkeypatch, level, expected):
    from components.common.logging import quiet_native_logs

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    quiet_native_logs(level)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == expected


def test_every_backbone_is_a_training_model_and_a_weights_choice():
    from components.common.backbones import BACKBONES
    from components.training.models import MODELS, SEED_CNN

    assert set(MODELS) == {SEED_CNN, *BACKBONES}
    for name, backbone in BACKBONES.items():
        spec = MODELS[name]
        assert spec.is_transfer and spec.backbone is backbone
        assert spec.default_input_size == backbone.default_input_size
        assert spec.scale == backbone.scale
        config = TrainConfig(dataset_uri="-", model=name)
        assert config.resolved_cut_layer == backbone.default_cut_layer
        assert WeightsConfig(backbone=name).backbone == name
    assert not MODELS[SEED_CNN].is_transfer
