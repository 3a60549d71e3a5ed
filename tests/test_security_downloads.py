"""Trust boundaries of sources: credentials in URLs never leak, downloads are bounded.

Probes put a password (`user:hunter2@`) and a signature (`?X-Goog-Signature=sig-abc123`) in
source URLs and look for them in logs, stderr, --output-json, index records, Model metadata and
the dataset manifest. Downloads go to the loopback server of tests/http_server.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tarfile
import time
import traceback
from pathlib import Path

import h5py
import numpy as np
import pytest

from components.common import storage
from components.common.dataset import DataError, load_manifest
from components.common.http import DownloadError, RetryPolicy, check_redirect, download
from components.common.logging import RedactFilter, configure
from components.common.redact import redact_text, redact_url, url_path_name
from components.data_prep import __main__ as prep_cli
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep_run
from components.weights import __main__ as weights_cli
from components.weights import artifacts as weights_artifacts
from components.weights.fetch import WeightsConfig
from components.weights.fetch import run as weights_run
from tests.conftest import free_port
from tests.http_server import Redirect, Stall

SECRETS = ("hunter2", "sig-abc123")
FAST = RetryPolicy(
    attempts=2, initial_wait_s=0.01, max_wait_s=0.02, connect_timeout_s=2, read_timeout_s=5
)


def signed(url: str) -> str:
    """The URL with a password and a signed query string, as a careless user might pass it."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://user:hunter2@{rest}?X-Goog-Signature=sig-abc123&X-Goog-Expires=900"


def assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def tree_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(root.rglob("*.json")))


@pytest.fixture
def h5_body(tmp_path: Path) -> bytes:
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle["kernel"] = np.random.default_rng(0).random(2048)
    return path.read_bytes()


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@host/a/w.h5", "https://REDACTED@host/a/w.h5"),
        ("https://host:8443/d.zip?X-Goog-Signature=s#frag", "https://host:8443/d.zip?REDACTED"),
        ("http://[::1]:80/x?token=t", "http://[::1]:80/x?REDACTED"),
        ("https://host/plain.h5", "https://host/plain.h5"),
        ("gs://bucket/prefix/w.h5", "gs://bucket/prefix/w.h5"),
        ("/local/path/w.h5", "/local/path/w.h5"),
        ("auto", "auto"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_finds_urls_and_url_fields_in_prose():
    text = (
        "GET 'https://u:pw@h/x.h5?sig=1' failed; "
        "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: /x.h5?sig=2 (...)"
    )
    assert redact_text(text) == (
        "GET 'https://REDACTED@h/x.h5?REDACTED' failed; "
        "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: /x.h5?REDACTED (...)"
    )


def test_standard_library_log_records_are_redacted():
    # urllib3 logs each request line at DEBUG, with the path's query string.
    record = logging.LogRecord(
        "urllib3.connectionpool", logging.DEBUG, __file__, 1, '%s://%s:%s "%s %s %s" %s %s',
        ("https", "h", 443, "GET", "/w.h5?X-Goog-Signature=sig-abc123", "HTTP/1.1", 200, 5),
        None,
    )  # fmt: skip
    assert RedactFilter().filter(record)
    assert record.getMessage() == 'https://h:443 "GET /w.h5?REDACTED HTTP/1.1" 200 5'


def test_archive_and_file_names_come_from_the_url_path():
    assert url_path_name("https://h/a/data.zip?X-Goog-Signature=abc") == "data.zip"
    assert url_path_name("https://h/a/w%20x.h5#part") == "w x.h5"


def test_weights_cli_keeps_credentials_out_of_logs_output_index_and_metadata(
    http_server, tmp_path, capsys, h5_body
):
    url = signed(http_server.add("/w.h5", h5_body))
    store, out = tmp_path / "store", tmp_path / "out.json"
    argv = ["--store", str(store), "--url", url, "--sha256", hashlib.sha256(h5_body).hexdigest()]
    argv += ["--no-keras-cache", "--output-json", str(out), "--log-format", "json"]
    assert weights_cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "step_start" in captured.out and "step_end" in captured.out
    summary = json.loads(out.read_text())
    assert summary["source"] == redact_url(url)
    assert summary["source"].startswith("http://REDACTED@127.0.0.1:")
    assert_clean(captured.out, captured.err, out.read_text(), tree_text(store / "weights"))
    # A second run is a cache hit; its Model metadata is what the KFP component publishes.
    config = WeightsConfig(store=str(store), weights_url=url, sha256=summary["sha256"], retry=FAST)
    result = weights_run(config)
    assert result.cache_hit
    assert_clean(json.dumps(weights_artifacts.record(result)), json.dumps(result.to_dict()))


def test_weights_cli_failure_and_retries_keep_credentials_out(http_server, tmp_path, capsys):
    url = signed(http_server.url("/missing.h5"))
    argv = ["--store", str(tmp_path / "store"), "--url", url, "--sha256", "0" * 64]
    argv += ["--no-keras-cache", "--log-format", "json"]
    assert weights_cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "step_failed" in captured.out and "error: " in captured.err
    assert "HTTP 404" in captured.err
    assert_clean(captured.out, captured.err)

    configure(json=True)
    flaky = signed(http_server.add("/flaky.h5", b"x", script=[503, 503]))
    with pytest.raises(DownloadError) as raised:
        download(flaky, tmp_path / "flaky.h5", policy=FAST)
    captured = capsys.readouterr()
    assert "download_retry" in captured.out
    assert_clean(captured.out, str(raised.value))


def test_unsupported_schemes_are_refused_without_echoing_credentials(tmp_path):
    config = WeightsConfig(store=str(tmp_path / "store"), md5="0" * 32, use_keras_cache=False)
    with pytest.raises(ValueError, match="unsupported scheme") as raised:
        weights_run(dataclasses.replace(config, weights_url=signed("ftp://127.0.0.1/w.h5")))
    assert_clean("".join(traceback.format_exception(raised.value)))
    with pytest.raises(ValueError, match="unsupported scheme") as raised:
        prep_run(PrepConfig(store=str(tmp_path / "store"), source=signed("s3://bucket/data")))
    assert_clean("".join(traceback.format_exception(raised.value)))


def test_connection_errors_name_the_url_without_its_query(tmp_path):
    url = signed(f"http://127.0.0.1:{free_port()}/w.h5")
    with pytest.raises(DownloadError) as raised:
        download(url, tmp_path / "w.h5", policy=FAST)
    assert "127.0.0.1" in str(raised.value)
    # What a KFP task's log shows when the exception escapes: the whole chained traceback.
    assert_clean("".join(traceback.format_exception(raised.value)))
    bad_port = "http://user:hunter2@127.0.0.1:notaport/w.h5?X-Goog-Signature=sig-abc123"
    with pytest.raises(DownloadError) as raised:
        download(bad_port, tmp_path / "w.h5", policy=FAST)
    assert_clean("".join(traceback.format_exception(raised.value)))


def test_signed_archive_url_is_an_archive_and_the_manifest_keeps_no_secret(
    http_server, image_tree, tmp_path, capsys
):
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_tree, arcname="dataset")
    url = signed(http_server.add("/data/tree.tar.gz", archive.read_bytes()))
    store, out = tmp_path / "store", tmp_path / "out.json"
    argv = ["--store", str(store), "--source", url, "--output-json", str(out)]
    assert prep_cli.main([*argv, "--log-format", "json"]) == 0
    captured = capsys.readouterr()
    manifest = load_manifest(json.loads(out.read_text())["uri"])
    assert manifest.source["kind"] == "folder"
    assert manifest.source["description"] == redact_url(url)
    assert_clean(captured.out, captured.err, out.read_text(), tree_text(store))


# --- bounded downloads ----------------------------------------------------------------------


def test_oversized_download_is_refused_at_once_and_leaves_nothing(http_server, tmp_path):
    url = http_server.add("/big.bin", bytes(5000))
    dest = tmp_path / "dl" / "big.bin"
    with pytest.raises(DownloadError, match=r"5000 bytes, more than the download limit of 1000"):
        download(url, dest, policy=dataclasses.replace(FAST, max_bytes=1000))
    assert http_server.count("/big.bin") == 1  # not retried
    assert list(dest.parent.iterdir()) == []


def test_weights_step_passes_its_size_cap_to_the_download(http_server, tmp_path, h5_body):
    url = http_server.add("/w.h5", h5_body)
    policy = dataclasses.replace(FAST, max_bytes=len(h5_body) - 1)
    config = WeightsConfig(
        store=str(tmp_path / "store"), weights_url=url, md5="0" * 32, retry=policy
    )
    with pytest.raises(DownloadError, match="more than the download limit"):
        weights_run(dataclasses.replace(config, use_keras_cache=False))
    assert storage.list_uris(str(tmp_path / "store")) == []


def test_download_stops_at_its_overall_deadline(http_server, tmp_path):
    url = http_server.add("/slow.bin", b"x" * 100, script=[Stall(4), Stall(4)])
    started = time.monotonic()
    with pytest.raises(DownloadError):
        download(url, tmp_path / "slow.bin", policy=dataclasses.replace(FAST, deadline_s=0.5))
    assert time.monotonic() - started < 3
    assert not (tmp_path / "slow.bin").exists()


def test_cross_host_redirect_is_refused(http_server, tmp_path):
    port = http_server.base_url.rsplit(":", 1)[1]
    http_server.add("/w.h5", b"body")
    url = http_server.add("/r", b"", script=[Redirect(f"http://localhost:{port}/w.h5")])
    with pytest.raises(DownloadError, match=r"refused a redirect to http://localhost"):
        download(url, tmp_path / "w.h5", policy=FAST)
    assert http_server.count("/w.h5") == 0


def test_data_prep_refuses_a_cross_host_redirect(http_server, tmp_path):
    port = http_server.base_url.rsplit(":", 1)[1]
    url = http_server.add("/d.zip", b"", script=[Redirect(f"http://localhost:{port}/d.zip")])
    config = PrepConfig(store=str(tmp_path / "store"), source=url, redirect_hosts=("localhost",))
    with pytest.raises(DownloadError, match="refused a redirect"):  # allowed hosts: https only
        prep_run(config)
    assert http_server.count("/d.zip") == 1


def test_same_origin_redirect_is_followed(http_server, tmp_path):
    http_server.add("/w.h5", b"body")
    url = http_server.add("/old", b"", script=[Redirect("/w.h5")])
    assert download(url, tmp_path / "w.h5", policy=FAST).read_bytes() == b"body"


@pytest.mark.parametrize(
    ("target", "hosts", "allowed"),
    [
        ("https://a.example/x", (), True),  # http -> https, same host
        ("https://b.example/x", (), False),
        ("https://b.example/x", ("b.example",), True),
        ("http://b.example/x", ("b.example",), False),  # the allow-list is for https only
        ("http://a.example:8080/x", (), False),  # another origin over http
    ],
)
def test_redirect_policy(target, hosts, allowed):
    policy = RetryPolicy(redirect_hosts=hosts)
    if allowed:
        check_redirect("http://a.example/w.h5", target, policy)
    else:
        with pytest.raises(DownloadError, match="refused a redirect"):
            check_redirect("http://a.example/w.h5", target, policy)


def test_auth_header_goes_only_to_its_listed_host(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_SOURCE_AUTH_HEADER", "X-Source-Token: tok-123")
    monkeypatch.setenv("TL_SOURCE_AUTH_HOSTS", "127.0.0.1")
    url = http_server.add("/w.h5", b"body")
    download(url, tmp_path / "a", policy=FAST)
    download(url.replace("127.0.0.1", "localhost"), tmp_path / "b", policy=FAST)
    sent = [r.headers.get("X-Source-Token") for r in http_server.requests]
    assert sent == ["tok-123", None]


def test_non_hdf5_error_names_the_type_never_the_bytes(tmp_path):
    secret_file = tmp_path / "env.h5"
    secret_file.write_bytes(b"API_KEY=sk-live-0123456789abcdef\nDB_PASSWORD=hunter2\n")
    config = WeightsConfig(
        store=str(tmp_path / "store"), weights_url=str(secret_file), md5="0" * 32
    )
    with pytest.raises(DataError, match=r"not an HDF5 weights file \(\d+ bytes, looks like text\)"):
        weights_run(dataclasses.replace(config, use_keras_cache=False))
    gz = tmp_path / "gz.h5"
    gz.write_bytes(b"\x1f\x8b\x08\x00secret-bytes")
    with pytest.raises(DataError, match=r"looks like gzip") as raised:
        weights_run(dataclasses.replace(config, weights_url=str(gz), use_keras_cache=False))
    assert "sk-live" not in str(raised.value) and "secret-bytes" not in str(raised.value)


# --- local paths ----------------------------------------------------------------------------


def test_local_sources_outside_the_roots_are_refused(tmp_path, monkeypatch, idx_source):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (other / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (allowed / "link.h5").symlink_to(other / "w.h5")
    monkeypatch.setenv("TL_LOCAL_SOURCE_ROOTS", str(allowed))
    config = WeightsConfig(store=str(tmp_path / "store"), md5="0" * 32, use_keras_cache=False)
    for source in (other / "w.h5", allowed / "link.h5", Path("/proc/self/environ")):
        with pytest.raises(ValueError, match="local paths are read only below"):
            weights_run(dataclasses.replace(config, weights_url=str(source)))
    with pytest.raises(ValueError, match="local paths are read only below"):
        prep_run(PrepConfig(store=str(tmp_path / "store"), source=str(idx_source)))
    # An explicit root (the step's parameter) lets it in.
    result = prep_run(
        PrepConfig(
            store=str(tmp_path / "store"), source=str(idx_source), local_roots=(str(tmp_path),)
        )
    )
    assert result.manifest.source["kind"] == "idx"


def test_default_roots_refuse_system_files_and_keep_temp_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_LOCAL_SOURCE_ROOTS", raising=False)
    config = WeightsConfig(store=str(tmp_path / "store"), md5="0" * 32, use_keras_cache=False)
    with pytest.raises(ValueError, match="local paths are read only below"):
        weights_run(dataclasses.replace(config, weights_url="/proc/self/environ"))
    (tmp_path / "w.h5").write_bytes(b"not weights")  # below the temp folder: read, then refused
    with pytest.raises(DataError, match="not an HDF5 weights file"):
        weights_run(dataclasses.replace(config, weights_url=str(tmp_path / "w.h5")))
