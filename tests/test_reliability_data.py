"""Data prep under races, a full disk and a read-only store; fuzzed parsers and archives."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.common import storage
from components.common.dataset import DataError, fetch_split, load_manifest
from components.data_prep import prep as prep_module
from components.data_prep.idx import IMAGES_MAGIC, LABELS_MAGIC, gunzip, load_pair, parse_idx
from components.data_prep.photos import SizePolicy, read_photo
from components.data_prep.prep import PrepConfig, run
from components.data_prep.sources import extract_archive
from tests.conftest import idx_bytes, make_idx_dataset

# --- races -------------------------------------------------------------------------------


def race(store: str, source: Path, monkeypatch) -> list:
    """Two data preps of the same version, both past the cache check before either publishes."""
    barrier = threading.Barrier(2, timeout=60)
    publish = prep_module._publish

    def synchronised_publish(*args):
        barrier.wait()
        return publish(*args)

    monkeypatch.setattr(prep_module, "_publish", synchronised_publish)
    results, errors, torn = [], [], []
    done = threading.Event()

    def reader() -> None:
        # Polls the manifest the whole time: it is absent or whole, never torn.
        while not done.is_set():
            uris = [u for u in storage.list_uris(store) if u.endswith("manifest.json")]
            for uri in uris:
                try:
                    load_manifest(uri.rsplit("/", 1)[0])
                except Exception as error:  # any failure here is a torn read
                    torn.append(error)

    def prep() -> None:
        try:
            results.append(run(PrepConfig(store=store, source=str(source))))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=prep) for _ in range(2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    watcher.join(30)
    assert errors == [] and torn == []
    return results


def assert_one_complete_dataset(results: list, tmp_path: Path) -> None:
    assert len(results) == 2
    assert results[0].uri == results[1].uri
    assert results[0].manifest == results[1].manifest
    manifest = load_manifest(results[0].uri)
    for split in ("train", "validation", "test"):
        fetch_split(results[0].uri, manifest, split, tmp_path / "cache")  # verifies sha256


def test_two_preps_racing_on_local_store(idx_source: Path, tmp_path: Path, monkeypatch):
    store = str(tmp_path / "store")
    results = race(store, idx_source, monkeypatch)
    assert_one_complete_dataset(results, tmp_path)
    leftovers = [p.name for p in Path(results[0].uri).parent.iterdir()]
    assert leftovers == [results[0].manifest.version]  # no staging folders left


def test_two_preps_racing_on_gcs(idx_source: Path, tmp_path: Path, monkeypatch, request):
    fake_gcs = request.getfixturevalue("fake_gcs")  # enforces the create-only precondition
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs)
    bucket = f"race-{uuid.uuid4().hex[:10]}"
    storage.client().create_bucket(bucket)
    results = race(f"gs://{bucket}/ml", idx_source, monkeypatch)
    assert_one_complete_dataset(results, tmp_path)


# --- disk full, read-only store (tmpfs mounts: need root) -------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {error}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_store(tmp_path: Path):
    source = make_idx_dataset(tmp_path / "idx", n_train=400, n_test=100, size=28)
    with tmpfs(tmp_path / "full", "64k") as store:
        with pytest.raises(storage.StorageError, match=r"No space left on device"):
            run(PrepConfig(store=str(store), source=str(source), records_per_shard=50))
        assert list(store.rglob("*")) == [store / "datasets", store / "datasets/fashion_mnist"]


def test_read_only_store(idx_source: Path, tmp_path: Path):
    with tmpfs(tmp_path / "ro", "1m") as store:
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        with pytest.raises(storage.StorageError, match=r"Read-only file system"):
            run(PrepConfig(store=str(store), source=str(idx_source)))
        assert list(store.rglob("*")) == []


def test_disk_full_local_write(tmp_path: Path):
    with tmpfs(tmp_path / "small", "16k") as folder:
        with pytest.raises(storage.StorageError, match=r"big\.bin: No space left on device"):
            storage.write_bytes(str(folder / "big.bin"), os.urandom(64 * 1024))
        assert list(folder.iterdir()) == []


# --- fuzzing -----------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALID_IMAGES = idx_bytes(np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4))
VALID_LABELS = idx_bytes(np.array([0, 1, 2], np.uint8))


def only_data_errors(call) -> object:
    try:
        return call()
    except DataError as error:
        assert str(error), "a DataError must carry a message"
        return None


@pytest.mark.fuzz
@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_idx_random_bytes(data: bytes):
    only_data_errors(lambda: parse_idx(gunzip(data, "f.gz"), "f.gz", IMAGES_MAGIC))
    only_data_errors(lambda: parse_idx(data, "f", LABELS_MAGIC))


@pytest.mark.fuzz
@FUZZ
@given(st.integers(0, len(gzip.compress(VALID_IMAGES))), st.integers(0, 15), st.integers(0, 255))
def test_fuzz_idx_truncated_and_patched(cut: int, offset: int, value: int):
    images_gz = gzip.compress(VALID_IMAGES)[:cut]
    only_data_errors(lambda: load_pair(images_gz, gzip.compress(VALID_LABELS), "i", "l", 3))
    patched = bytearray(VALID_IMAGES)
    patched[offset] = value
    result = only_data_errors(
        lambda: load_pair(gzip.compress(bytes(patched)), gzip.compress(VALID_LABELS), "i", "l", 3)
    )
    if result is not None:
        images, labels = result
        assert len(images) == len(labels) == 3


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.fuzz
@FUZZ
@given(st.data())
def test_fuzz_image_decoding(data):
    valid = png_bytes()
    choice = data.draw(st.sampled_from(["random", "truncated", "patched"]))
    if choice == "random":
        blob = data.draw(st.binary(max_size=256))
    elif choice == "truncated":
        blob = valid[: data.draw(st.integers(0, len(valid) - 1))]
    else:
        patched = bytearray(valid)
        patched[data.draw(st.integers(0, 40))] = data.draw(st.integers(0, 255))
        blob = bytes(patched)
    sizing = SizePolicy("centre_crop", (8, 8), "auto")
    image = only_data_errors(lambda: read_photo(blob, 1_000_000, 3, sizing, "x.png"))
    if image is not None:
        assert image.shape == (8, 8, 3)


def tree_archive(kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as zipped:
            zipped.writestr("train/a/0.png", png_bytes())
            zipped.writestr("test/a/0.png", png_bytes())
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name in ("train/a/0.png", "test/a/0.png"):
                info = tarfile.TarInfo(name)
                info.size = len(png_bytes())
                tar.addfile(info, io.BytesIO(png_bytes()))
    return buffer.getvalue()


@pytest.mark.fuzz
@FUZZ
@given(st.sampled_from(["zip", "tar.gz"]), st.data())
def test_fuzz_archives(tmp_path_factory, kind: str, data):
    valid = tree_archive(kind)
    mode = data.draw(st.sampled_from(["random", "truncated", "patched"]))
    if mode == "random":
        blob = data.draw(st.binary(max_size=512))
    elif mode == "truncated":
        blob = valid[: data.draw(st.integers(0, len(valid) - 1))]
    else:
        patched = bytearray(valid)
        patched[data.draw(st.integers(0, len(valid) - 1))] ^= data.draw(st.integers(1, 255))
        blob = bytes(patched)
    folder = tmp_path_factory.mktemp("fuzz")
    archive = folder / f"a.{kind}"
    archive.write_bytes(blob)
    dest = folder / "out"
    only_data_errors(lambda: extract_archive(archive, dest))
    for path in dest.rglob("*"):  # whatever was extracted stayed inside the target
        assert path.resolve().is_relative_to(dest.resolve())
        assert not path.is_symlink()


@pytest.mark.fuzz
@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))
@given(st.sampled_from(["zip", "tar.gz"]), st.integers(0, 10_000), st.integers(1, 255))
def test_fuzz_archive_ingest_end_to_end(tmp_path_factory, kind: str, position: int, flip: int):
    """A whole data prep on a damaged archive: a clear error and nothing published, or a
    complete dataset whose every shard verifies."""
    valid = bytearray(tree_archive(kind))
    valid[position % len(valid)] ^= flip
    folder = tmp_path_factory.mktemp("ingest")
    archive = folder / f"tree.{kind}"
    archive.write_bytes(bytes(valid))
    store = folder / "store"
    try:
        result = run(PrepConfig(store=str(store), source=str(archive), val_fraction=0.0))
    except DataError as error:
        assert str(archive) in str(error)
        assert not list(store.rglob("manifest.json")) and not list(store.rglob("*.tfrecord"))
        return
    manifest = load_manifest(result.uri)
    fetch_split(result.uri, manifest, "test", folder / "cache")
