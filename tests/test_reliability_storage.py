"""Storage faults: a fault-injecting proxy in front of fake-gcs-server (which, unlike
gcp-storage-emulator, enforces generation preconditions), driven through the real client.

The matrix follows the shape of the client conformance tests: each fault, on writes with and
without a precondition, and on reads. Every case must succeed after retries with the data
intact, or (403, 404) fail fast with a clear message.
"""

from __future__ import annotations

import uuid

import pytest
from google.cloud.storage.retry import DEFAULT_RETRY

from components.common import storage
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

UPLOAD = r"^/upload/"
MEDIA = r"alt=media"
TRANSIENT = ["status:503", "status:429", "status:500", "reset", "slow:0.3"]


@pytest.fixture
def proxy(fake_gcs: str, monkeypatch):
    """A fresh proxy and bucket; fast retries so the matrix runs in seconds."""
    monkeypatch.setattr(
        storage, "GCS_RETRY", DEFAULT_RETRY.with_delay(initial=0.02, maximum=0.2).with_timeout(30)
    )
    with FaultProxy(fake_gcs) as faults:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", faults.url)
        bucket = f"faults-{uuid.uuid4().hex[:10]}"
        storage.client().create_bucket(bucket)
        faults.bucket = f"gs://{bucket}"
        faults.plan.seen.clear()
        yield faults


PAYLOAD = bytes(range(256)) * 64  # 16 KiB


@pytest.mark.parametrize("precondition", [False, True], ids=["plain", "if_generation_match"])
@pytest.mark.parametrize("fault", TRANSIENT)
def test_write_survives_transient_fault(proxy: FaultProxy, fault: str, precondition: bool):
    uri = f"{proxy.bucket}/w/object.bin"
    proxy.inject(fault, method="POST", path=UPLOAD, times=2)
    kwargs = {"if_generation_match": 0} if precondition else {}
    storage.write_bytes(uri, PAYLOAD, **kwargs)
    # A slow answer still succeeds: only the first planned delay is used.
    assert proxy.outcomes().count(fault) == (1 if fault.startswith("slow") else 2), proxy.plan.seen
    assert storage.read_bytes(uri) == PAYLOAD


@pytest.mark.parametrize("fault", [*TRANSIENT, "cut"])
def test_read_survives_transient_fault(proxy: FaultProxy, fault: str):
    uri = f"{proxy.bucket}/r/object.bin"
    storage.write_bytes(uri, PAYLOAD)
    proxy.inject(fault, method="GET", path=MEDIA, times=2)
    assert storage.read_bytes(uri) == PAYLOAD
    assert proxy.outcomes().count(fault) == (1 if fault.startswith("slow") else 2), proxy.plan.seen


def test_download_file_survives_fault_and_is_atomic(proxy: FaultProxy, tmp_path):
    uri = f"{proxy.bucket}/d/object.bin"
    storage.write_bytes(uri, PAYLOAD)
    proxy.inject("cut", method="GET", path=MEDIA)
    proxy.inject("status:503", method="GET", path=MEDIA)
    local = storage.download_file(uri, tmp_path / "copy.bin")
    assert local.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.bin"]


def test_corrupted_download_is_detected(proxy: FaultProxy):
    uri = f"{proxy.bucket}/c/object.bin"
    storage.write_bytes(uri, PAYLOAD)
    proxy.inject("corrupt", method="GET", path=MEDIA, times=20)
    with pytest.raises(Exception, match=r"(?i)checksum|crc32c|corrupt") as info:
        storage.read_bytes(uri)
    assert "corrupt" in proxy.outcomes()
    assert not isinstance(info.value, AssertionError)


@pytest.mark.parametrize("precondition", [False, True], ids=["plain", "if_generation_match"])
def test_forbidden_write_fails_fast(proxy: FaultProxy, precondition: bool):
    uri = f"{proxy.bucket}/f/object.bin"
    proxy.inject("status:403", method="POST", path=UPLOAD, times=5)
    kwargs = {"if_generation_match": 0} if precondition else {}
    with pytest.raises(storage.StorageError, match=r"f/object\.bin: permission denied"):
        storage.write_bytes(uri, PAYLOAD, **kwargs)
    assert proxy.outcomes().count("status:403") == 1  # not retried


def test_missing_object_fails_fast(proxy: FaultProxy):
    with pytest.raises(storage.NotFoundError, match=r"missing\.bin: not found"):
        storage.read_bytes(f"{proxy.bucket}/missing.bin")
    assert len(proxy.plan.seen) == 1


def test_slow_response_past_timeout_is_retried(proxy: FaultProxy, monkeypatch):
    monkeypatch.setattr(storage, "GCS_TIMEOUT", (5, 0.5))
    uri = f"{proxy.bucket}/t/object.bin"
    storage.write_bytes(uri, PAYLOAD)
    proxy.inject("slow:1.5", method="GET", path=MEDIA)
    assert storage.read_bytes(uri) == PAYLOAD
    assert proxy.outcomes().count("slow:1.5") == 1
    assert proxy.outcomes().count("forward") >= 2  # the write, and the retried read


def test_precondition_is_enforced_through_faults(proxy: FaultProxy):
    uri = f"{proxy.bucket}/p/champion.json"
    storage.write_text(uri, "first", if_generation_match=0)
    generation = storage.generation(uri)
    proxy.inject("status:503", method="POST", path=UPLOAD)
    storage.write_text(uri, "second", if_generation_match=generation)
    with pytest.raises(storage.PreconditionFailedError):
        storage.write_text(uri, "stale", if_generation_match=generation)
    assert storage.read_text(uri) == "second"
