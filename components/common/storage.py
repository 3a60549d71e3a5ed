"""Read, write, list and atomically publish objects by URI: `gs://bucket/prefix` or a local path.

No step knows which one it has. GCS goes through google-cloud-storage with its retry policy and
CRC32C checksums on; local writes go to a temporary file in the target folder, then `os.replace`.
Every write is atomic: a reader sees the old object, the new object, or nothing, never half.

Compare-and-swap (`generation` + `write_bytes(..., if_generation_match=...)`) uses GCS generation
preconditions, and on local disk a lock file held around the compare and the replace.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from google.api_core import exceptions as gexc
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY

from components.common.config import ConfigError

GCS_PREFIX = "gs://"
# (connect, read) seconds for every GCS request.
GCS_TIMEOUT = (10, 120)
# Retry idempotent GCS operations: connection errors, 408, 429 and 5xx, exponential backoff with
# jitter, for at most this many seconds.
GCS_RETRY = DEFAULT_RETRY.with_timeout(300.0)


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI."""


class NotFoundError(StorageError, FileNotFoundError):
    """The object does not exist."""


class PreconditionFailedError(StorageError):
    """A compare-and-swap lost: the object changed since its generation was read."""


def is_gcs(uri: str) -> bool:
    """Whether the URI names a GCS object or prefix."""
    return uri.startswith(GCS_PREFIX)


def join(base: str, *parts: str) -> str:
    """Join URI parts with single slashes (works for gs:// and local paths)."""
    out = base.rstrip("/") if base not in ("/", "") else base
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}" if out else part
    return out


def split_gcs(uri: str) -> tuple[str, str]:
    """Split `gs://bucket/name` into (bucket, name)."""
    if not is_gcs(uri):
        raise ConfigError(f"not a gs:// URI: {uri}")
    bucket, _, name = uri[len(GCS_PREFIX) :].partition("/")
    if not bucket:
        raise ConfigError(f"gs:// URI without a bucket: {uri}")
    return bucket, name


@functools.cache
def _client_for(emulator_host: str | None) -> gcs.Client:
    # The emulator needs no credentials; the real service uses Application Default Credentials
    # (Workload Identity on GKE).
    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return gcs.Client(project="local-emulator", credentials=AnonymousCredentials())
    return gcs.Client()


def client() -> gcs.Client:
    """The process's GCS client (honours STORAGE_EMULATOR_HOST)."""
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST"))


def _blob(uri: str) -> gcs.Blob:
    bucket, name = split_gcs(uri)
    if not name:
        raise ConfigError(f"gs:// URI names a bucket, not an object: {uri}")
    return client().bucket(bucket).blob(name)


@contextlib.contextmanager
def _gcs_errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except gexc.NotFound as error:
        raise NotFoundError(f"{action} {uri}: not found") from error
    except gexc.PreconditionFailed as error:
        raise PreconditionFailedError(f"{action} {uri}: the object changed meanwhile") from error
    except gexc.Forbidden as error:
        raise StorageError(f"{action} {uri}: permission denied ({error.message})") from error
    except gexc.GoogleAPICallError as error:
        raise StorageError(f"{action} {uri}: {error}") from error


def exists(uri: str) -> bool:
    """Whether an object (or local file or folder) exists at the URI."""
    if is_gcs(uri):
        with _gcs_errors(uri, "checking"):
            return _blob(uri).exists(retry=GCS_RETRY, timeout=GCS_TIMEOUT)
    return Path(uri).exists()


def read_bytes(uri: str) -> bytes:
    """Read a whole object."""
    if is_gcs(uri):
        with _gcs_errors(uri, "reading"):
            return _blob(uri).download_as_bytes(
                retry=GCS_RETRY, timeout=GCS_TIMEOUT, checksum="crc32c"
            )
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError as error:
        raise NotFoundError(f"reading {uri}: not found") from error
    except OSError as error:
        raise StorageError(f"reading {uri}: {error.strerror or error}") from error


def read_text(uri: str) -> str:
    """Read a whole object as UTF-8 text."""
    return read_bytes(uri).decode("utf-8")


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain `open()` would give a new file (temporary files start as 0600)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plain `mkdir()` would give a new folder."""
    return 0o777 & ~_umask()


def _local_atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode())
    except OSError as error:
        raise StorageError(f"writing {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise StorageError(f"writing {path}: {error.strerror or error}") from error
        raise


@contextlib.contextmanager
def _local_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def generation(uri: str) -> int:
    """The object's generation for compare-and-swap; 0 when it does not exist."""
    if is_gcs(uri):
        blob = _blob(uri)
        with _gcs_errors(uri, "checking"):
            try:
                blob.reload(retry=GCS_RETRY, timeout=GCS_TIMEOUT)
            except gexc.NotFound:
                return 0
        return int(blob.generation)
    try:
        return Path(uri).stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def write_bytes(uri: str, data: bytes, *, if_generation_match: int | None = None) -> None:
    """Write an object atomically.

    With `if_generation_match`, the write happens only if the object's generation still equals
    it (0: only if the object does not exist); otherwise `PreconditionFailedError` is raised.
    """
    if is_gcs(uri):
        with _gcs_errors(uri, "writing"):
            _blob(uri).upload_from_string(
                data,
                if_generation_match=if_generation_match,
                retry=GCS_RETRY,
                timeout=GCS_TIMEOUT,
                checksum="crc32c",
            )
        return
    path = Path(uri)
    if if_generation_match is None:
        _local_atomic_write(path, lambda handle: handle.write(data))
        return
    with _local_lock(path):
        before = generation(uri)
        if before != if_generation_match:
            raise PreconditionFailedError(f"writing {uri}: the object changed meanwhile")
        _local_atomic_write(path, lambda handle: handle.write(data))
        if generation(uri) <= before:  # same (or a coarse) clock tick: the change must show
            os.utime(path, ns=(before + 1, before + 1))


def write_text(uri: str, text: str, **kwargs: int | None) -> None:
    """Write UTF-8 text atomically (see `write_bytes`)."""
    write_bytes(uri, text.encode("utf-8"), **kwargs)


def upload_file(
    local_path: str | Path, uri: str, *, if_generation_match: int | None = None
) -> None:
    """Publish a local file at the URI atomically (GCS: one checksummed upload)."""
    local_path = Path(local_path)
    if is_gcs(uri):
        with _gcs_errors(uri, "uploading to"):
            _blob(uri).upload_from_filename(
                str(local_path),
                if_generation_match=if_generation_match,
                retry=GCS_RETRY,
                timeout=GCS_TIMEOUT,
                checksum="crc32c",
            )
        return
    if if_generation_match is not None:
        write_bytes(uri, local_path.read_bytes(), if_generation_match=if_generation_match)
        return

    def copy(handle: BinaryIO) -> None:
        with open(local_path, "rb") as source:
            shutil.copyfileobj(source, handle, length=1 << 20)

    _local_atomic_write(Path(uri), copy)


def download_file(uri: str, local_path: str | Path) -> Path:
    """Copy an object to a local file atomically (checksum-verified for GCS)."""
    local_path = Path(local_path)
    if is_gcs(uri):
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local_path.name}.", dir=local_path.parent)
        os.close(fd)
        try:
            with _gcs_errors(uri, "downloading"):
                _blob(uri).download_to_filename(
                    tmp, retry=GCS_RETRY, timeout=GCS_TIMEOUT, checksum="crc32c"
                )
            os.replace(tmp, local_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return local_path
    if not Path(uri).is_file():
        raise NotFoundError(f"downloading {uri}: not found")

    def copy(handle: BinaryIO) -> None:
        with open(uri, "rb") as source:
            shutil.copyfileobj(source, handle, length=1 << 20)

    _local_atomic_write(local_path, copy)
    return local_path


def list_uris(prefix: str) -> list[str]:
    """Every object below a prefix (recursive), sorted. Local: files below a folder."""
    if is_gcs(prefix):
        bucket, name = split_gcs(prefix)
        name = name.rstrip("/") + "/" if name else ""
        with _gcs_errors(prefix, "listing"):
            blobs = client().list_blobs(bucket, prefix=name, retry=GCS_RETRY, timeout=GCS_TIMEOUT)
            return sorted(f"{GCS_PREFIX}{bucket}/{blob.name}" for blob in blobs)
    root = Path(prefix)
    if not root.is_dir():
        return []
    # Dot files are this module's temporary and lock files, never objects.
    return sorted(
        str(path)
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def delete(uri: str) -> None:
    """Delete an object if it exists."""
    if is_gcs(uri):
        with contextlib.suppress(NotFoundError), _gcs_errors(uri, "deleting"):
            _blob(uri).delete(retry=GCS_RETRY, timeout=GCS_TIMEOUT)
        return
    with contextlib.suppress(FileNotFoundError):
        Path(uri).unlink()
