"""Data prep on the real Fashion-MNIST files from Debian's dataset-fashion-mnist package."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from components.common import storage
from components.data_prep.prep import PrepConfig, run
from components.data_prep.sources import DEBIAN_FASHION_MNIST_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(DEBIAN_FASHION_MNIST_DIR) / "t10k-labels-idx1-ubyte.gz").exists(),
        reason="apt-get install dataset-fashion-mnist (.ci/run installs it)",
    ),
]

EXPECTED = {"train": 54_000, "validation": 6_000, "test": 10_000}


def check(result) -> None:
    manifest = result.manifest
    assert {name: split.count for name, split in manifest.splits.items()} == EXPECTED
    assert manifest.num_classes == 10 and manifest.image_shape == (28, 28, 1)
    assert set(manifest.splits["validation"].per_class.values()) == {600}
    assert set(manifest.splits["test"].per_class.values()) == {1000}


def test_real_fashion_mnist_local(tmp_path: Path):
    config = PrepConfig(store=str(tmp_path / "store"))  # source "auto": the Debian files
    first = run(config)
    check(first)
    assert first.manifest.source["description"] == DEBIAN_FASHION_MNIST_DIR
    started = time.perf_counter()
    again = run(config)
    print(f"cache hit in {time.perf_counter() - started:.2f} s")  # figure for the log, not a gate
    assert again.cache_hit and again.manifest == first.manifest


def test_real_fashion_mnist_on_gcs_emulator(gcs_bucket: str):
    config = PrepConfig(store=f"{gcs_bucket}/ml")
    first = run(config)
    check(first)
    names = [uri.rsplit("/", 1)[1] for uri in storage.list_uris(first.uri)]
    assert "manifest.json" in names
    assert sum(name.endswith(".tfrecord") for name in names) == 6 + 1 + 1
    assert run(config).cache_hit
