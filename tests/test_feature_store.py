"""Backbone features in the store: computed once per dataset, weights, cut, size and dtype."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.common import storage
from components.common.config import ConfigError
from components.common.dataset import DataError
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from components.training import features
from components.training.artifacts import config as task_config
from components.training.config import TrainConfig
from components.training.train import run
from tests.conftest import make_idx_dataset

TRANSFER = {"model": "inception_v3", "input_size": 75, "cut_layer": "mixed0"}


def train_config(dataset: str, work: Path, store: str, **overrides) -> TrainConfig:
    values = {
        "dataset_uri": dataset,
        "output_dir": str(work / "out"),
        "epochs": 1,
        "batch_size": 16,
        "cache_dir": str(work / "cache"),  # a fresh pod: nothing local from earlier runs
        "seed": 3,
        "feature_store": store,
        **TRANSFER,
    }
    values.update(overrides)
    return TrainConfig(**values)


def two_runs(store: str, dataset: str, weights: str, tmp_path: Path, capsys):
    """A first run, then one that changes only head settings, each on an empty local cache."""
    capsys.readouterr()
    run(train_config(dataset, tmp_path / "first", store, weights_uri=weights))
    first = capsys.readouterr().out
    head_only = {"learning_rate": 3e-4, "dropout_rate": 0.5, "epochs": 2}
    second_result = run(
        train_config(dataset, tmp_path / "second", store, weights_uri=weights, **head_only)
    )
    return first, capsys.readouterr().out, second_result


@pytest.mark.slow
def test_second_run_with_new_head_settings_runs_no_backbone_pass(
    tmp_path, inception_weights, capsys
):
    source = make_idx_dataset(tmp_path / "idx", n_train=60, n_test=20)
    store = str(tmp_path / "store")
    dataset = prep(PrepConfig(store=store, source=str(source))).uri
    first, second, result = two_runs(store, dataset, inception_weights, tmp_path, capsys)
    assert "features_extracted" in first and "features_published" in first
    assert "features_store_hit" in second
    assert "features_extracted" not in second and "features_published" not in second
    assert result.epochs_run == 2
    published = [Path(p) for p in storage.list_uris(str(Path(store) / "features"))]
    manifest = next(p for p in published if p.name == features.STORE_MANIFEST)
    # <store>/features/<dataset version>/<weights sha256>/<cut layer>/<input size>/<dtype>/
    *_, version, sha, cut, size, dtype = manifest.parent.parts
    assert (cut, size, dtype) == ("mixed0", "75", "float16") and len(sha) == 64
    assert dataset.rstrip("/").endswith(version)
    assert {p.name for p in published} == {
        "features.json",
        "train.bin",
        "train.labels.npy",
        "validation.bin",
        "validation.labels.npy",
    }
    assert not [p for p in manifest.parent.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_features_are_shared_through_a_gcs_store(tmp_path, inception_weights, gcs_bucket, capsys):
    source = make_idx_dataset(tmp_path / "idx", n_train=60, n_test=20)
    dataset = prep(PrepConfig(store=gcs_bucket, source=str(source))).uri
    weights = f"{gcs_bucket}/weights/abc/inception_v3_notop.weights.h5"
    storage.upload_file(inception_weights, weights)
    first, second, _ = two_runs(gcs_bucket, dataset, weights, tmp_path, capsys)
    assert "features_extracted" in first and "features_published" in first
    assert "features_store_hit" in second and "features_extracted" not in second
    names = storage.list_uris(f"{gcs_bucket}/features")
    assert sum(uri.endswith("/features.json") for uri in names) == 1


@pytest.mark.slow
def test_a_backbone_without_weights_has_no_features(tmp_path, capsys):
    """No weights: the backbone trains from scratch, end to end; no features anywhere."""
    source = make_idx_dataset(tmp_path / "idx", n_train=60, n_test=20)
    store = str(tmp_path / "store")
    dataset = prep(PrepConfig(store=store, source=str(source))).uri
    run(train_config(dataset, tmp_path / "run", store))
    assert "features_extracted" not in capsys.readouterr().out
    assert not (Path(store) / "features").exists()
    assert not list((tmp_path / "run" / "cache").glob("features/*/train.bin"))


def test_training_task_passes_its_store():
    built = task_config(work=Path("/w"), store="gs://bucket/store", dataset_uri="d")
    assert built.feature_store == "gs://bucket/store"


# The store's contents are untrusted: every field of the manifest and every file is checked.

FACTS = {
    "dataset_version": "0123456789abcdef",
    "model": "inception_v3",
    "weights_sha256": "a" * 64,
    "cut_layer": "mixed0",
    "input_size": 75,
    "dtype": "float16",
}


def published(tmp_path: Path) -> str:
    """Features of 4 images x (2, 3) float16 per split, published in a local store."""
    folder = tmp_path / "made"
    folder.mkdir()
    files = {}
    for split in features.SPLITS:
        values = np.arange(4 * 6, dtype=np.float16).reshape(4, 2, 3)
        (folder / f"{split}.bin").write_bytes(values.tobytes())
        labels = np.array([0, 1, 2, 1], dtype=np.int64)
        np.save(folder / f"{split}.labels.npy", labels)
        files[split] = features.FeatureFile(folder / f"{split}.bin", labels, (2, 3), "float16")
    uri = features.store_uri(
        str(tmp_path / "store"), **{k: v for k, v in FACTS.items() if k != "model"}
    )
    assert features.publish(folder, files, uri, FACTS)
    assert not features.publish(folder, files, uri, FACTS)  # create-only: the first one wins
    return uri


def test_published_features_download_and_decode(tmp_path):
    files = features.fetch(published(tmp_path), tmp_path / "local", FACTS, num_classes=3)
    assert files["train"].shape == (2, 3) and list(files["train"].labels) == [0, 1, 2, 1]
    batches = list(features.feature_dataset(files["validation"], 4))
    np.testing.assert_array_equal(batches[0][0].numpy().reshape(-1), np.arange(24))
    assert features.cached(tmp_path / "local", "train") is not None


def test_missing_features_are_none(tmp_path):
    uri = features.store_uri(str(tmp_path), **{k: v for k, v in FACTS.items() if k != "model"})
    assert features.fetch(uri, tmp_path / "local", FACTS, num_classes=3) is None


def rewrite_manifest(uri: str, change) -> None:
    path = Path(uri) / features.STORE_MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(dtype="float32"), "dtype is 'float32', expected 'float16'"),
        (lambda m: m.update(weights_sha256="b" * 64), "weights_sha256 is"),
        (lambda m: m["splits"]["train"].update(shape=[2, -3]), "shape must be"),
        (lambda m: m["splits"]["train"].update(count=5), "expected 5 records of 12 bytes"),
        (
            lambda m: m["splits"]["train"].update(
                files={"../train.bin": {}, "train.labels.npy": {}}
            ),
            "files must be exactly",
        ),
        (lambda m: m["splits"].pop("validation"), "splits must be exactly"),
        (lambda m: m.update(format=99), "not a format-1 features manifest"),
    ],
)
def test_bad_manifest_is_refused_naming_it(tmp_path, change, message):
    uri = published(tmp_path)
    rewrite_manifest(uri, change)
    with pytest.raises(DataError, match=message) as error:
        features.fetch(uri, tmp_path / "local", FACTS, num_classes=3)
    assert features.STORE_MANIFEST in str(error.value)
    assert features.cached(tmp_path / "local", "train") is None  # nothing marked usable


def test_tampered_feature_file_is_refused(tmp_path):
    uri = published(tmp_path)
    path = Path(uri) / "validation.bin"
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, other content
    with pytest.raises(DataError, match=r"validation\.bin: .* the manifest says"):
        features.fetch(uri, tmp_path / "local", FACTS, num_classes=3)
    assert features.cached(tmp_path / "local", "validation") is None


def test_labels_out_of_range_are_refused(tmp_path):
    uri = published(tmp_path)
    with pytest.raises(
        DataError, match=r"train\.labels\.npy: expected 4 integer labels in \[0, 2\)"
    ):
        features.fetch(uri, tmp_path / "local", FACTS, num_classes=2)


@pytest.mark.parametrize(
    ("field", "value"),
    [("dataset_version", "../up"), ("cut_layer", "a/b"), ("weights_sha256", "xyz")],
)
def test_store_path_parts_are_strict_names(field, value):
    with pytest.raises((ConfigError, DataError), match=field.split("_")[0]):
        features.store_uri(
            "gs://b/s", **{**{k: v for k, v in FACTS.items() if k != "model"}, field: value}
        )
