"""The weights step: fetch pretrained backbone weights, verify them, publish them by content.

Published files live at `<store>/weights/<sha256>/<filename>`. A record per hash,
`<store>/weights/index/{sha256,md5}-<hash>.json`, is written after the file and marks it as
verified; it lets a run that knows only the publisher's md5 find the copy without a download.
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
    if not filename:
        raise ConfigError(f"{source}: cannot tell a file name; pass filename")
    sha256, md5 = config.sha256 or None, config.md5 or None
    if sha256 is None and md5 is None:
        # A mirror of the published file (same name) is checked against the published hash.
        if source != published.weights_url and filename != published.weights_filename:
            raise ConfigError(
                f"{source}: no pinned checksum; pass sha256 or md5 for weights other than "
                f"{config.backbone}'s published {published.weights_filename}"
            )
        sha256, md5 = published.weights_sha256 or None, published.weights_md5 or None
    return _Target(source, filename, sha256 and sha256.lower(), md5 and md5.lower())


def weights_uri(store: str, sha256: str, filename: str) -> str:
    """The content address of a weights file."""
    return storage.join(store, "weights", sha256, filename)


def _record_uri(store: str, algorithm: str, digest: str) -> str:
    return storage.join(store, "weights", "index", f"{algorithm}-{digest}.json")


def _lookup(store: str, target: _Target) -> dict | None:
    """The record of a verified copy in the store, if there is one whose file still exists."""
    for algorithm in ("sha256", "md5"):
        digest = getattr(target, algorithm)
        if digest is None:
            continue
        try:
            record = json.loads(storage.read_text(_record_uri(store, algorithm, digest)))
        except storage.NotFoundError:
            continue
        actual = Digests(size=record["size"], sha256=record["sha256"], md5=record["md5"])
        check_hashes(actual, target.sha256, target.md5, f"store copy of {target.source}")
        if storage.exists(weights_uri(store, record["sha256"], record["filename"])):
            return record
        log.warning("store_record_without_file", sha256=record["sha256"])
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
        "source": target.source,
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
        result = dict(source=target.source, backbone=config.backbone, pretrained=True)
        record = _lookup(config.store, target)
        if record is not None:
            uri = weights_uri(config.store, record["sha256"], record["filename"])
            log.info("weights_cache_hit", uri=uri, sha256=record["sha256"])
            figures.update(cache_hit=True, uri=uri, size=record["size"])
            return WeightsResult(
                uri=uri,
                sha256=record["sha256"],
                size=record["size"],
                cache_hit=True,
                md5=record["md5"],
                filename=record["filename"],
                fetched_from="store",
                **result,
            )
        with tempfile.TemporaryDirectory(prefix="weights-", dir=config.work_dir or None) as tmp:
            local = Path(tmp) / target.filename
            fetched_from = "keras_cache"
            if not (config.use_keras_cache and _from_keras_cache(config, target, local)):
                fetched_from = "source"
                try:
                    fetch(target.source, local, policy=config.retry, session=session)
                except DownloadError as error:
                    hint = _offline_hint(config, target) if is_url(target.source) else ""
                    raise DownloadError(f"{error}{hint}") from error
            digests = verify(local, target.source, target.sha256, target.md5)
            uri = _publish(config.store, local, target, digests, config)
        log.info("weights_published", uri=uri, sha256=digests.sha256, size=digests.size)
        figures.update(cache_hit=False, uri=uri, size=digests.size, fetched_from=fetched_from)
        return WeightsResult(
            uri=uri,
            sha256=digests.sha256,
            size=digests.size,
            cache_hit=False,
            md5=digests.md5,
            filename=target.filename,
            fetched_from=fetched_from,
            **result,
        )
