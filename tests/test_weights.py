"""The weights step against a scripted loopback HTTP server, local disk and the GCS emulator."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import resource
from pathlib import Path

import h5py
import numpy as np
import pytest

from components.common import storage
from components.common.backbones import BACKBONES
from components.common.dataset import DataError
from components.common.http import DownloadError, RetryPolicy
from components.weights import artifacts
from components.weights.__main__ import main
from components.weights.fetch import WeightsConfig, _target, run, weights_uri
from components.weights.sources import source_filename
from components.weights.verify import ChecksumMismatchError, check_hdf5
from tests.conftest import free_port
from tests.http_server import Drop

FAST_RETRY = RetryPolicy(
    attempts=3, initial_wait_s=0.01, max_wait_s=0.02, connect_timeout_s=2, read_timeout_s=5
)
INCEPTION_FILE = BACKBONES["inception_v3"].weights_filename


def make_h5(path: Path, size_kb: int = 256, seed: int = 0) -> Path:
    """A small HDF5 file with one random dataset (incompressible, so sizes are real)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        handle["kernel"] = rng.random(size_kb * 128)  # 8 bytes each
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small(tmp_path: Path) -> bytes:
    return make_h5(tmp_path / "small.h5").read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def keras_cache(tmp_path: Path) -> Path:
    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    return folder


def config(store: str, url: str, keras_cache: Path, **overrides) -> WeightsConfig:
    base = WeightsConfig(
        store=store,
        weights_url=url,
        keras_cache_dir=str(keras_cache),
        work_dir=str(keras_cache.parent.parent),
        retry=FAST_RETRY,
    )
    return dataclasses.replace(base, **overrides)


def published(store: str) -> list[str]:
    return storage.list_uris(storage.join(store, "weights"))


def first_conv(model):
    """The first convolution (by type: Keras numbers layer names per process)."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


@pytest.fixture(scope="session")
def inception(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A randomly initialised InceptionV3 no-top in Keras' legacy .h5 weights layout (the
    official file's), and the first convolution's kernel for comparison."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(7)
    model = keras.applications.InceptionV3(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    kernel = first_conv(model).kernel.numpy()
    keras.backend.clear_session()
    return path, kernel


# --- success, cache hits ---------------------------------------------------------------------


@pytest.mark.slow
def test_success_publishes_weights_keras_inception_loads(
    http_server, store, keras_cache, inception
):
    path, kernel = inception
    body = path.read_bytes()
    url = http_server.add(f"/keras/{INCEPTION_FILE}", body)
    result = run(config(store, url, keras_cache, sha256=sha256(body)))

    assert result.pretrained and not result.cache_hit
    assert result.fetched_from == "source"
    assert result.sha256 == sha256(body) and result.size == len(body)
    assert result.md5 == hashlib.md5(body).hexdigest()
    assert result.uri == weights_uri(store, sha256(body), INCEPTION_FILE)
    assert result.uri == f"{store}/weights/{sha256(body)}/{INCEPTION_FILE}"
    assert result.source == url and result.backbone == "inception_v3"
    assert Path(result.uri).read_bytes() == body
    assert artifacts.record(result)["sha256"] == result.sha256
    assert http_server.count() == 1

    import keras

    backbone = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(150, 150, 3)
    )
    backbone.load_weights(result.uri)
    np.testing.assert_array_equal(first_conv(backbone).kernel.numpy(), kernel)
    keras.backend.clear_session()


@pytest.mark.parametrize("pin", ["sha256", "md5"])
def test_cache_hit_makes_no_second_request(http_server, store, keras_cache, small, pin):
    digest = {"sha256": sha256(small), "md5": hashlib.md5(small).hexdigest()}[pin]
    url = http_server.add("/w.h5", small)
    first = run(config(store, url, keras_cache, **{pin: digest}))
    second = run(config(store, url, keras_cache, **{pin: digest}))

    assert http_server.count("/w.h5") == 1
    assert not first.cache_hit and second.cache_hit
    assert second.fetched_from == "store"
    assert (second.uri, second.sha256, second.size) == (first.uri, first.sha256, len(small))


def test_keras_cache_is_used_before_the_network(http_server, store, keras_cache, small):
    (keras_cache / "w.h5").write_bytes(small)
    url = http_server.add("/w.h5", b"never served")
    result = run(config(store, url, keras_cache, sha256=sha256(small)))

    assert result.fetched_from == "keras_cache" and not result.cache_hit
    assert http_server.count() == 0
    assert Path(result.uri).read_bytes() == small


def test_corrupt_keras_cache_copy_is_skipped(http_server, store, keras_cache, small):
    (keras_cache / "w.h5").write_bytes(small[:1000])
    url = http_server.add("/w.h5", small)
    result = run(config(store, url, keras_cache, sha256=sha256(small)))

    assert result.fetched_from == "source"
    assert http_server.count() == 1
    assert Path(result.uri).read_bytes() == small


def test_mirror_of_the_published_file_is_checked_against_its_md5(
    http_server, store, keras_cache, small
):
    # No hash given and the official file name: the backbone's published md5 applies.
    url = http_server.add(f"/mirror/{INCEPTION_FILE}", small)
    with pytest.raises(ChecksumMismatchError, match=BACKBONES["inception_v3"].weights_md5):
        run(config(store, url, keras_cache))
    assert published(store) == []


def test_default_url_resolves_to_the_published_file():
    published = BACKBONES["inception_v3"]
    assert WeightsConfig().weights_url == "default"
    target = _target(WeightsConfig(weights_url="default"))
    assert target.source == published.weights_url
    assert (target.filename, target.md5) == (INCEPTION_FILE, published.weights_md5)


def test_local_path_source(store, keras_cache, tmp_path, small):
    source = tmp_path / "copy" / "weights.h5"
    source.parent.mkdir()
    source.write_bytes(small)
    result = run(config(store, str(source), keras_cache, sha256=sha256(small)))
    assert Path(result.uri).read_bytes() == small
    assert Path(result.uri).name == "weights.h5"


# --- transient faults ----------------------------------------------------------------------


@pytest.mark.parametrize("faults", [[503, 503], [429, 500]])
def test_transient_statuses_are_retried(http_server, store, keras_cache, small, faults):
    url = http_server.add("/w.h5", small, script=faults)
    result = run(config(store, url, keras_cache, sha256=sha256(small)))

    assert http_server.statuses("/w.h5") == [*faults, 200]
    assert Path(result.uri).read_bytes() == small


def test_dropped_connection_resumes_with_range(http_server, store, keras_cache, small):
    url = http_server.add("/w.h5", small, script=[Drop(after=100_000)])
    result = run(config(store, url, keras_cache, sha256=sha256(small)))

    assert http_server.ranges("/w.h5") == [None, "bytes=100000-"]
    assert http_server.statuses("/w.h5") == [200, 206]
    assert Path(result.uri).read_bytes() == small


def test_server_without_range_support_sends_it_all_again(http_server, store, keras_cache, small):
    url = http_server.add("/w.h5", small, script=[Drop(after=100_000)], ranges=False)
    result = run(config(store, url, keras_cache, sha256=sha256(small)))

    assert http_server.statuses("/w.h5") == [200, 200]
    assert Path(result.uri).read_bytes() == small


# --- bad input: clear error, nothing in the store --------------------------------------------


def test_checksum_mismatch(http_server, store, keras_cache, small):
    url = http_server.add("/w.h5", small)
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as error:
        run(config(store, url, keras_cache, sha256=wrong))
    message = str(error.value)
    assert wrong in message and sha256(small) in message and url in message
    assert published(store) == []


def test_md5_mismatch(http_server, store, keras_cache, small):
    url = http_server.add("/w.h5", small)
    with pytest.raises(ChecksumMismatchError, match=r"md5 mismatch: expected 0{32}, got"):
        run(config(store, url, keras_cache, md5="0" * 32))
    assert published(store) == []


@pytest.mark.parametrize("status", [404, 403])
def test_client_error_fails_without_retry(http_server, store, keras_cache, small, status):
    url = http_server.add("/w.h5", small, script=[status] * 5)
    with pytest.raises(DownloadError, match=f"HTTP {status}"):
        run(config(store, url, keras_cache, sha256=sha256(small)))
    assert http_server.count("/w.h5") == 1
    assert published(store) == []


def test_truncated_body_on_every_attempt(http_server, store, keras_cache, small):
    url = http_server.add("/w.h5", small, script=[Drop(after=1000)] * 5, ranges=False)
    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        run(config(store, url, keras_cache, sha256=sha256(small)))
    assert http_server.count("/w.h5") == 3
    assert published(store) == []
    assert list((keras_cache.parent.parent).glob("weights-*")) == []


def test_html_page_instead_of_weights(http_server, store, keras_cache, small):
    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
    url = http_server.add("/w.h5", page, content_type="text/html")
    with pytest.raises(DataError, match=r"not an HDF5 weights file.*HTML page"):
        run(config(store, url, keras_cache, sha256=sha256(small)))
    assert published(store) == []


def test_disk_full_while_downloading(http_server, store, keras_cache, small):
    url = http_server.add("/w.h5", small)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as a full disk would.
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(DownloadError, match="no space left"):
            run(config(store, url, keras_cache, sha256=sha256(small)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert published(store) == []
    assert list((keras_cache.parent.parent).glob("weights-*")) == []


def test_unreachable_default_says_what_to_do(store, keras_cache):
    url = f"http://127.0.0.1:{free_port()}/{INCEPTION_FILE}"
    with pytest.raises(DownloadError) as error:
        run(config(store, url, keras_cache))
    message = str(error.value)
    assert "gave up after 3 attempts" in message
    assert str(keras_cache) in message and "--weights-url none" in message
    assert published(store) == []


def test_custom_url_needs_a_pinned_hash(store, keras_cache):
    with pytest.raises(ValueError, match="no pinned checksum"):
        run(config(store, "http://127.0.0.1:1/other.h5", keras_cache))


@pytest.mark.parametrize(
    "overrides",
    [{"backbone": "vgg99"}, {"sha256": "abc"}, {"md5": "z" * 32}, {"filename": "a/b.h5"}],
)
def test_config_validation(overrides):
    with pytest.raises(ValueError):
        WeightsConfig(**overrides)


# --- none, gs://, CLI, pure helpers ---------------------------------------------------------


def test_none_means_not_pretrained(store, keras_cache, capsys):
    result = run(config(store, "none", keras_cache))
    assert result.pretrained is False and result.uri is None and result.sha256 is None
    assert result.source == "none"
    assert "NOT pretrained" in capsys.readouterr().out
    assert published(store) == []


def test_gcs_source_and_store(gcs_bucket, keras_cache, small):
    source = f"{gcs_bucket}/mirror/w.h5"
    storage.write_bytes(source, small)
    store = f"{gcs_bucket}/store"
    first = run(config(store, source, keras_cache, sha256=sha256(small)))
    second = run(config(store, source, keras_cache, sha256=sha256(small)))

    assert first.uri == f"{store}/weights/{sha256(small)}/w.h5"
    assert storage.read_bytes(first.uri) == small
    assert not first.cache_hit and second.cache_hit and second.uri == first.uri


def test_gcs_source_missing(gcs_bucket, keras_cache):
    store = f"{gcs_bucket}/store"
    with pytest.raises(storage.NotFoundError, match="not found"):
        run(config(store, f"{gcs_bucket}/nope/w.h5", keras_cache, sha256="1" * 64))
    assert published(store) == []


def test_cli_success_and_failure(http_server, store, keras_cache, small, tmp_path, capsys):
    url = http_server.add("/w.h5", small)
    out = tmp_path / "result.json"
    common = ["--store", store, "--keras-cache-dir", str(keras_cache), "--log-format", "json"]
    args = ["--weights-url", url, "--sha256", sha256(small), "--output-json", str(out)]
    assert main([*common, *args]) == 0
    result = json.loads(out.read_text())
    assert result["sha256"] == sha256(small) and result["pretrained"] is True
    assert Path(result["uri"]).read_bytes() == small

    missing = http_server.url("/missing.h5")
    assert main([*common, "--url", missing, "--sha256", "1" * 64]) == 1  # the older spelling
    assert "HTTP 404" in capsys.readouterr().err


def test_hdf5_signature_after_user_block(tmp_path):
    path = tmp_path / "user_block.h5"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["x"] = np.arange(3)
    check_hdf5(path, "user_block.h5")
    with contextlib.suppress(FileNotFoundError):
        (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes"):
        check_hdf5(tmp_path / "empty.h5", "empty.h5")


def test_source_filename():
    assert source_filename("https://h/a/b%20c.h5?x=1") == "b c.h5"
    assert source_filename("gs://bucket/p/w.h5") == "w.h5"
    assert source_filename("/tmp/w.h5") == "w.h5"


def test_content_range_start():
    from components.common.http import _range_start

    assert _range_start("bytes 100-199/200") == 100
    assert _range_start("bytes */200") is None
    assert _range_start("") is None
