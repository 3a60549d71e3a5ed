"""The weights step: fetch pretrained backbone weights, verify them, publish them by content.

Published files live at `<store>/weights/<sha256>/<filename>`. A record per hash,
`<store>/weights/index/{sha256,md5}-<hash>.json`, is written after the file; it lets a run that
knows only the publisher's md5 find the copy without a download. Records are store contents, so
they are not trusted: their fields must match strict patterns, and the copy they point at is
hashed again (HDF5 signature, sha256, md5) before it is served.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from components.common import storage
from components.common.backbones import BACKBONES
from components.common.config import ConfigError
from components.common.http import DownloadError
from components.common.logging import get_logger, step
from components.common.names import MD5_PATTERN, SHA256_PATTERN, is_file_name
from components.common.redact import redact_url
from components.weights.config import DEFAULT, NONE, WeightsConfig
from components.weights.sources import copy_local, fetch, is_url, keras_cache_dirs, source_filename
from components.weights.verify import Digests, check_hashes, verify

log = get_logger("weights")


@dataclass(frozen=True)
class WeightsResult:
    """The published weights file, or the plain statement that there is none."""

    uri: str | None  # <store>/weights/<sha256>/<filename>; None when not pretrained
    sha256: str | None
    size: int | None  # bytes
    source: str  # the configured source (URL, gs:// URI, path) or "none"
    backbone: str
    pretrained: bool
    cache_hit: bool  # the store already had a verified copy; nothing was fetched
    md5: str | None = None
    filename: str | None = None
    fetched_from: str | None = None  # "store", "keras_cache" or "source"; None: not pretrained

    def to_dict(self) -> dict:
        """All fields, JSON-ready."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Target:
    source: str
    filename: str
    sha256: str | None
    md5: str | None


def _target(config: WeightsConfig) -> _Target:
    """Resolve the source, the file name and the pinned hashes."""
    published = BACKBONES[config.backbone]
    url = config.weights_url
    source = published.weights_url if url.lower() == DEFAULT else url
    filename = config.filename or source_filename(source)
    if not is_file_name(filename):
        raise ConfigError(
            f"{redact_url(source)}: cannot tell a plain file name (got {filename!r}); pass filename"
        )
    sha256, md5 = config.sha256 or None, config.md5 or None
    if sha256 is None and md5 is None:
        # A mirror of the published file (same name) is checked against the published hash.
        if source != published.weights_url and filename != published.weights_filename:
            raise ConfigError(
                f"{redact_url(source)}: no pinned checksum; pass sha256 or md5 for weights "
                f"other than {config.backbone}'s published {published.weights_filename}"
            )
        sha256, md5 = published.weights_sha256 or None, published.weights_md5 or None
    return _Target(source, filename, sha256 and sha256.lower(), md5 and md5.lower())


def weights_uri(store: str, sha256: str, filename: str) -> str:
    """The content address of a weights file."""
    return storage.join(store, "weights", sha256, filename)


def _record_uri(store: str, algorithm: str, digest: str) -> str:
    return storage.join(store, "weights", "index", f"{algorithm}-{digest}.json")


def _valid_record(record: object, algorithm: str, digest: str) -> bool:
    """Whether an index record read from the store has the fields and forms we write."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("sha256"), str)
        and bool(SHA256_PATTERN.fullmatch(record["sha256"]))
        and isinstance(record.get("md5"), str)
        and bool(MD5_PATTERN.fullmatch(record["md5"]))
        and is_file_name(record.get("filename"))
        and isinstance(record.get("size"), int)
        and record[algorithm] == digest
    )


def _verified_copy(store: str, record: dict, target: _Target, work: Path) -> Digests | None:
    """Hash the copy a record points at again; a planted or damaged copy is not served."""
    uri = weights_uri(store, record["sha256"], record["filename"])
    if not storage.exists(uri):
        log.warning("store_record_without_file", sha256=record["sha256"])
        return None
    local = Path(uri) if not storage.is_gcs(uri) else work / "store-copy" / record["filename"]
    try:
        if storage.is_gcs(uri):
            storage.download_file(uri, local)
        actual = verify(local, f"store copy {uri}", record["sha256"], record["md5"])
        check_hashes(actual, target.sha256, target.md5, f"store copy {uri}")
    except ValueError as error:  # DataError and ChecksumMismatchError are ValueErrors
        log.warning("store_copy_rejected", uri=uri, error=str(error))
        return None
    finally:
        if storage.is_gcs(uri):
            local.unlink(missing_ok=True)
    return actual


def _lookup(store: str, target: _Target, work: Path) -> tuple[dict, Digests] | None:
    """The record of a copy in the store and its digests, hashed again now; None: no such copy."""
    for algorithm in ("sha256", "md5"):
        digest = getattr(target, algorithm)
        if digest is None:
            continue
        record_uri = _record_uri(store, algorithm, digest)
        try:
            record = json.loads(storage.read_text(record_uri))
        except storage.NotFoundError:
            continue
        except ValueError:  # not JSON, not UTF-8
            record = None
        if not _valid_record(record, algorithm, digest):
            log.warning("store_record_rejected", uri=record_uri)
            continue
        digests = _verified_copy(store, record, target, work)
        if digests is not None:
            return record, digests
    return None


def _from_keras_cache(config: WeightsConfig, target: _Target, dest: Path) -> Path | None:
    """A verified copy of the file from Keras' cache, or None."""
    names = dict.fromkeys((target.filename, source_filename(target.source)))
    for folder in keras_cache_dirs(config.keras_cache_dir or None):
        for name in names:
            candidate = folder / name
            if not candidate.is_file():
                continue
            copy_local(candidate, dest)
            try:
                verify(dest, str(candidate), target.sha256, target.md5)
            except ValueError as error:  # DataError and ChecksumMismatchError are ValueErrors
                log.warning("keras_cache_rejected", path=str(candidate), error=str(error))
                dest.unlink()
                continue
            log.info("keras_cache_hit", path=str(candidate))
            return dest
    return None


def _offline_hint(config: WeightsConfig, target: _Target) -> str:
    folder = keras_cache_dirs(config.keras_cache_dir or None)[0]
    return (
        f"; without network access put {target.filename} in {folder} (Keras' cache), "
        "pass --weights-url to a reachable copy (http(s)://, gs:// or a local path) with its "
        "hash, or --weights-url none to train the transfer model without pretrained weights"
    )


def _publish(
    store: str, path: Path, target: _Target, digests: Digests, config: WeightsConfig
) -> str:
    uri = weights_uri(store, digests.sha256, target.filename)
    storage.upload_file(path, uri)
    record = {
        "sha256": digests.sha256,
        "md5": digests.md5,
        "size": digests.size,
        "filename": target.filename,
        "source": redact_url(target.source),
        "backbone": config.backbone,
    }
    text = json.dumps(record, indent=2, sort_keys=True)
    for algorithm in ("sha256", "md5"):
        storage.write_text(_record_uri(store, algorithm, getattr(digests, algorithm)), text)
    return uri


def _not_pretrained(config: WeightsConfig) -> WeightsResult:
    log.warning(
        "not_pretrained",
        backbone=config.backbone,
        message=f"no pretrained weights: the {config.backbone} transfer model trains from "
        "random initialisation, it is NOT pretrained",
    )
    return WeightsResult(
        uri=None,
        sha256=None,
        size=None,
        source=NONE,
        backbone=config.backbone,
        pretrained=False,
        cache_hit=False,
    )


def run(config: WeightsConfig, *, session: requests.Session | None = None) -> WeightsResult:
    """Publish verified weights to the store; a copy already there is reused, not fetched."""
    with step(log, "weights", source=config.weights_url, backbone=config.backbone) as figures:
        if not config.pretrained:
            figures.update(pretrained=False)
            return _not_pretrained(config)
        target = _target(config)
        result = dict(source=redact_url(target.source), backbone=config.backbone, pretrained=True)
        with tempfile.TemporaryDirectory(prefix="weights-", dir=config.work_dir or None) as tmp:
            found = _lookup(config.store, target, Path(tmp))
            if found is not None:
                record, digests = found
                uri = weights_uri(config.store, digests.sha256, record["filename"])
                log.info("weights_cache_hit", uri=uri, sha256=digests.sha256)
                figures.update(cache_hit=True, uri=uri, size=digests.size)
                return _result(uri, digests, record["filename"], "store", **result)
            local = Path(tmp) / target.filename
            fetched_from = "keras_cache"
            if not (config.use_keras_cache and _from_keras_cache(config, target, local)):
                fetched_from = "source"
                try:
                    fetch(
                        target.source,
                        local,
                        policy=config.retry,
                        session=session,
                        local_roots=config.local_roots,
                    )
                except DownloadError as error:
                    hint = _offline_hint(config, target) if is_url(target.source) else ""
                    raise DownloadError(f"{error}{hint}") from error
            digests = verify(local, redact_url(target.source), target.sha256, target.md5)
            uri = _publish(config.store, local, target, digests, config)
        log.info("weights_published", uri=uri, sha256=digests.sha256, size=digests.size)
        figures.update(cache_hit=False, uri=uri, size=digests.size, fetched_from=fetched_from)
        return _result(uri, digests, target.filename, fetched_from, **result)


def _result(uri: str, digests: Digests, filename: str, fetched_from: str, **facts) -> WeightsResult:
    """The step's result; `fetched_from` "store" is a cache hit."""
    return WeightsResult(
        uri=uri,
        sha256=digests.sha256,
        size=digests.size,
        cache_hit=fetched_from == "store",
        md5=digests.md5,
        filename=filename,
        fetched_from=fetched_from,
        **facts,
    )
