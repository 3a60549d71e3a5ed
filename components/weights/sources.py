"""Bring a weights file to local disk: from Keras' cache, http(s)://, gs:// or a local path."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import requests

from components.common import storage
from components.common.http import NO_SPACE_ERRNOS, DownloadError, RetryPolicy, download
from components.common.local_roots import check_local
from components.common.redact import url_path_name


def is_url(source: str) -> bool:
    """Whether the source is an http(s) URL."""
    return source.startswith(("http://", "https://"))


def source_filename(source: str) -> str:
    """The last path segment of a URL (from its path, not its query), gs:// URI or local path."""
    return url_path_name(source)


def keras_cache_dirs(configured: str | None) -> list[Path]:
    """Where Keras keeps downloaded weights: `$KERAS_HOME/models`, else `~/.keras/models`.

    Keras falls back to `/tmp/.keras` when the home folder is not writable, so that is looked
    at too.
    """
    if configured is not None:
        return [Path(configured)]
    if "KERAS_HOME" in os.environ:
        return [Path(os.environ["KERAS_HOME"]).expanduser() / "models"]
    return [Path("~/.keras/models").expanduser(), Path("/tmp/.keras/models")]


def _copy(source: Path, dest: Path) -> None:
    try:
        with open(source, "rb") as reader, open(dest, "wb") as writer:
            shutil.copyfileobj(reader, writer, length=1 << 20)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{source}: no such file") from error
    except OSError as error:
        dest.unlink(missing_ok=True)
        if error.errno in NO_SPACE_ERRNOS:
            raise DownloadError(f"{source}: no space left while writing {dest}") from error
        raise DownloadError(f"{source}: cannot copy to {dest}: {error.strerror}") from error


def copy_local(source: Path, dest: Path) -> Path:
    """Copy a local file (so that what is verified is what gets published)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _copy(source, dest)
    return dest


def fetch(
    source: str,
    dest: Path,
    *,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    local_roots: Sequence[str] | None = None,
) -> Path:
    """Copy the source to `dest`: a retried, resumable download, a GCS read or a local copy.

    A local source must lie below one of `local_roots` (None: `local_roots.configured_roots`).
    """
    if is_url(source):
        return download(source, dest, policy=policy, session=session)
    if storage.is_gcs(source):
        try:
            return storage.download_file(source, dest)
        except OSError as error:
            if isinstance(error, storage.StorageError):
                raise
            if error.errno in NO_SPACE_ERRNOS:
                raise DownloadError(f"{source}: no space left while writing {dest}") from error
            raise DownloadError(f"{source}: cannot write {dest}: {error.strerror}") from error
    return copy_local(check_local(source, "weights source", local_roots), dest)
