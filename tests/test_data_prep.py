"""Data prep end to end: IDX and image-folder sources, local and gs:// stores, cache hits."""

from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.common import storage
from components.common.dataset import IMAGE_KEY, LABEL_KEY, fetch_split, load_manifest
from components.data_prep.__main__ import main
from components.data_prep.prep import PrepConfig, run
from tests.conftest import make_idx_dataset


def read_split(uri: str, split: str, tmp_path: Path, shape) -> tuple[np.ndarray, np.ndarray]:
    manifest = load_manifest(uri)
    paths = fetch_split(uri, manifest, split, tmp_path / "cache")
    images, labels = [], []
    for record in tf.data.TFRecordDataset([str(p) for p in paths]):
        example = tf.io.parse_single_example(
            record,
            {
                IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
                LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            },
        )
        images.append(tf.io.decode_raw(example[IMAGE_KEY], tf.uint8).numpy().reshape(shape))
        labels.append(int(example[LABEL_KEY]))
    return np.asarray(images), np.asarray(labels)


def test_idx_local_counts_manifest_and_cache_hit(idx_source: Path, tmp_path: Path):
    store = str(tmp_path / "store")
    config = PrepConfig(store=store, source=str(idx_source), records_per_shard=20)
    result = run(config)
    manifest = result.manifest
    assert not result.cache_hit
    assert manifest.class_names[0] == "T-shirt/top" and manifest.num_classes == 10
    assert {k: s.count for k, s in manifest.splits.items()} == {
        "train": 54,
        "validation": 6,
        "test": 20,
    }
    # Stratified: the 6 validation images are spread over 6 different classes.
    assert sum(manifest.splits["validation"].per_class.values()) == 6
    assert max(manifest.splits["validation"].per_class.values()) == 1
    assert manifest.image_shape == (8, 8, 1)
    assert len(manifest.splits["train"].shards) == 3  # 54 records, 20 per shard
    assert manifest.splits["train"].shards[0].file == "train-00000-of-00003.tfrecord"
    assert manifest.source["kind"] == "idx" and len(manifest.source["sha256"]) == 64
    assert result.uri == f"{store}/datasets/fashion_mnist/{manifest.version}"

    images, labels = read_split(result.uri, "test", tmp_path, (8, 8, 1))
    assert images.dtype == np.uint8 and images.shape == (20, 8, 8, 1)
    assert sorted(labels.tolist()) == sorted((np.arange(20) % 10).tolist())

    mtimes = {p: p.stat().st_mtime_ns for p in Path(result.uri).iterdir()}
    again = run(config)
    assert again.cache_hit and again.manifest == manifest
    assert {p: p.stat().st_mtime_ns for p in Path(result.uri).iterdir()} == mtimes


def test_changed_source_or_params_give_new_version(idx_source: Path, tmp_path: Path):
    store = str(tmp_path / "store")
    first = run(PrepConfig(store=store, source=str(idx_source)))
    other_params = run(PrepConfig(store=store, source=str(idx_source), val_fraction=0.2))
    changed = make_idx_dataset(tmp_path / "idx2", seed=7)
    other_source = run(PrepConfig(store=store, source=str(changed)))
    versions = {
        first.manifest.version,
        other_params.manifest.version,
        other_source.manifest.version,
    }
    assert len(versions) == 3


def test_limit_is_class_balanced(idx_source: Path, tmp_path: Path):
    result = run(PrepConfig(store=str(tmp_path / "s"), source=str(idx_source), limit=30))
    splits = result.manifest.splits
    assert splits["train"].count + splits["validation"].count == 30
    assert splits["test"].count == 20  # fewer than the limit: all kept
    train_and_val = {
        name: splits["train"].per_class[name] + splits["validation"].per_class[name]
        for name in result.manifest.class_names
    }
    assert set(train_and_val.values()) == {3}


@pytest.mark.parametrize("packing", ["folder", "tar.gz", "zip"])
def test_image_folder_sources(image_tree: Path, tmp_path: Path, packing: str):
    source = image_tree
    if packing == "tar.gz":
        source = tmp_path / "tree.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(image_tree, arcname="dataset")  # a single top-level folder is fine
    elif packing == "zip":
        source = tmp_path / "tree.zip"
        with zipfile.ZipFile(source, "w") as zipped:
            for path in sorted(image_tree.rglob("*.png")):
                zipped.write(path, path.relative_to(image_tree).as_posix())
    result = run(PrepConfig(store=str(tmp_path / "store"), source=str(source), val_fraction=0.25))
    manifest = result.manifest
    assert manifest.class_names == ("cat", "dog")
    assert manifest.image_shape == (6, 5, 1)
    assert {k: s.count for k, s in manifest.splits.items()} == {
        "train": 6,
        "validation": 2,
        "test": 8,
    }
    assert manifest.splits["validation"].per_class == {"cat": 1, "dog": 1}


def test_rgb_images_keep_three_channels(tmp_path: Path):
    from tests.conftest import make_image_tree

    tree = make_image_tree(tmp_path / "rgb", mode="RGB", size=(4, 4))
    result = run(PrepConfig(store=str(tmp_path / "store"), source=str(tree), val_fraction=0.25))
    assert result.manifest.image_shape == (4, 4, 3)
    images, _ = read_split(result.uri, "test", tmp_path, (4, 4, 3))
    assert images.shape == (8, 4, 4, 3)


def test_gcs_source_and_store(gcs_bucket: str, idx_source: Path, tmp_path: Path):
    for path in idx_source.iterdir():
        storage.upload_file(path, f"{gcs_bucket}/raw/fmnist/{path.name}")
    store = f"{gcs_bucket}/ml"
    config = PrepConfig(store=store, source=f"{gcs_bucket}/raw/fmnist")
    result = run(config)
    assert result.uri.startswith(f"{gcs_bucket}/ml/datasets/fashion_mnist/")
    names = {uri.rsplit("/", 1)[1] for uri in storage.list_uris(result.uri)}
    assert "manifest.json" in names and "train-00000-of-00001.tfrecord" in names
    images, _ = read_split(result.uri, "train", tmp_path, (8, 8, 1))
    assert images.shape == (54, 8, 8, 1)
    again = run(config)
    assert again.cache_hit and again.manifest.version == result.manifest.version
    # The same content from a local folder gives the same version.
    local = run(PrepConfig(store=str(tmp_path / "s"), source=str(idx_source)))
    assert local.manifest.version == result.manifest.version


def test_gcs_image_folder_source(gcs_bucket: str, image_tree: Path, tmp_path: Path):
    for path in image_tree.rglob("*.png"):
        storage.upload_file(path, f"{gcs_bucket}/tree/{path.relative_to(image_tree).as_posix()}")
    result = run(PrepConfig(store=str(tmp_path / "s"), source=f"{gcs_bucket}/tree"))
    assert result.manifest.class_names == ("cat", "dog")
    assert result.manifest.splits["test"].count == 8


@pytest.fixture
def served_folder(idx_source: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(idx_source))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_source(served_folder: str, idx_source: Path, tmp_path: Path):
    result = run(PrepConfig(store=str(tmp_path / "s"), source=served_folder))
    local = run(PrepConfig(store=str(tmp_path / "s2"), source=str(idx_source)))
    assert result.manifest.version == local.manifest.version
    assert result.manifest.source["description"] == served_folder


def test_cli_writes_summary_and_exits_zero(idx_source: Path, tmp_path: Path, capsys):
    summary = tmp_path / "summary.json"
    code = main(
        [
            "--store",
            str(tmp_path / "store"),
            "--source",
            str(idx_source),
            "--output-json",
            str(summary),
            "--log-format",
            "json",
        ]
    )
    assert code == 0
    data = json.loads(summary.read_text())
    assert data["splits"] == {"train": 54, "validation": 6, "test": 20}
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events[0] == "step_start" and events[-1] == "step_end"


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_test_split_parses():
    from components.data_prep.idx import load_pair

    folder = Path("/usr/share/datasets/fashion-mnist")
    images, labels = load_pair(
        (folder / "t10k-images-idx3-ubyte.gz").read_bytes(),
        (folder / "t10k-labels-idx1-ubyte.gz").read_bytes(),
        "t10k-images",
        "t10k-labels",
        10,
    )
    assert images.shape == (10000, 28, 28, 1)
    assert np.bincount(labels).tolist() == [1000] * 10
