"""Resolve a data source to local files: IDX files or an image-folder tree.

A source is a base URL, a local folder, a `gs://` prefix, or a `.tar.gz`/`.tgz`/`.zip` archive
(local, URL or `gs://`) of an image-folder tree. Archives are extracted only after every entry
has been checked: no absolute paths, no `..`, no links, no devices.
"""

from __future__ import annotations

import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from components.common import storage
from components.common.dataset import DataError
from components.common.digest import file_digest, json_digest
from components.common.http import RetryPolicy, download
from components.common.local_roots import DEBIAN_DATASETS_DIR, check_local
from components.common.redact import redact_url, url_path_name
from components.data_prep.idx import FASHION_MNIST_FILES

OFFICIAL_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
DEBIAN_FASHION_MNIST_DIR = f"{DEBIAN_DATASETS_DIR}/fashion-mnist"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
MAX_ARCHIVE_BYTES = 64 << 30  # largest total size an archive may unpack to (bomb guard)
MAX_ARCHIVE_ENTRIES = 10_000_000


@dataclass(frozen=True)
class ResolvedSource:
    """A source made local: what kind it is, where its files are, and its content hash."""

    kind: str  # "idx" or "folder"
    description: str  # the source as the user gave it (resolved from "auto"; URL redacted)
    local_dir: Path  # folder holding the IDX files or the image-folder tree
    sha256: str  # hash of the source content


def resolve_auto(source: str) -> str:
    """`auto`: the local Debian Fashion-MNIST files when present, otherwise the official URL."""
    if source != "auto":
        return source
    debian = Path(DEBIAN_FASHION_MNIST_DIR)
    if all((debian / name).is_file() for name in FASHION_MNIST_FILES.values()):
        return str(debian)
    return OFFICIAL_FASHION_MNIST_URL


def _is_archive(source: str) -> bool:
    # From the URL's path: a signed ".../data.zip?X-Goog-Signature=..." is an archive.
    return url_path_name(source).lower().endswith(ARCHIVE_SUFFIXES)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _fetch(uri: str, dest: Path, policy: RetryPolicy) -> Path:
    """Copy one file from a URL, gs:// or local path to `dest` (retried where remote)."""
    if _is_url(uri):
        return download(uri, dest, policy=policy)
    try:
        return storage.download_file(uri, dest)
    except storage.NotFoundError:
        raise DataError(f"{redact_url(uri)}: not found") from None


def _hash_tree(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return json_digest([[str(p.relative_to(root)), file_digest(p)] for p in files])


def _idx_source(base: str, work: Path, description: str, policy: RetryPolicy) -> ResolvedSource:
    local = Path(base)
    if not (_is_url(base) or storage.is_gcs(base)):
        for name in FASHION_MNIST_FILES.values():
            if not (local / name).is_file():
                raise DataError(f"{local / name}: missing IDX file")
    else:
        local = work / "idx"
        for name in FASHION_MNIST_FILES.values():
            _fetch(storage.join(base, name), local / name, policy)
    hashes = {name: file_digest(local / name) for name in FASHION_MNIST_FILES.values()}
    return ResolvedSource("idx", description, local, json_digest(hashes))


def resolve(
    source: str,
    work: Path,
    policy: RetryPolicy = RetryPolicy(),  # noqa: B008
    local_roots: tuple[str, ...] | None = None,
) -> ResolvedSource:
    """Make `source` local under `work` and identify its kind; downloads follow `policy`.

    A local source must lie below one of `local_roots` (None: `local_roots.configured_roots`).
    """
    location = resolve_auto(source)
    description = redact_url(location)
    if not (_is_url(location) or storage.is_gcs(location)):
        check_local(location, "source", local_roots)
    if _is_archive(location):
        return _resolve_archive(location, description, work, policy)
    if _is_url(location):
        return _idx_source(location, work, description, policy)
    if storage.is_gcs(location):
        return _resolve_gcs(location, description, work, policy)
    folder = Path(location)
    if not folder.is_dir():
        raise DataError(f"{folder}: source not found (not a folder, archive, URL or gs:// path)")
    if any(folder.glob("*-idx[13]-ubyte.gz")):
        return _idx_source(location, work, description, policy)
    return ResolvedSource("folder", description, folder, _hash_tree(folder))


def _resolve_archive(
    location: str, description: str, work: Path, policy: RetryPolicy
) -> ResolvedSource:
    archive = Path(location)
    if _is_url(location) or storage.is_gcs(location):
        name = url_path_name(location)
        if not _is_plain_name(name):
            raise DataError(f"{description}: archive name {name!r} is not a plain file name")
        archive = _fetch(location, work / "download" / name, policy)
    elif not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    tree = work / "tree"
    extract_archive(archive, tree)
    return ResolvedSource("folder", description, tree, file_digest(archive))


def _resolve_gcs(
    location: str, description: str, work: Path, policy: RetryPolicy
) -> ResolvedSource:
    objects = storage.list_uris(location)
    prefix = location.rstrip("/") + "/"
    names = {uri[len(prefix) :] for uri in objects}
    if set(FASHION_MNIST_FILES.values()) <= names:
        return _idx_source(location, work, description, policy)
    if not any(name.startswith("train/") for name in names):
        raise DataError(
            f"{description}: neither IDX files ({', '.join(FASHION_MNIST_FILES.values())}) "
            "nor a train/ folder"
        )
    tree = work / "tree"
    for uri in objects:
        name = uri[len(prefix) :]
        if name.endswith("/"):  # a console "folder" placeholder
            continue
        _check_member(name, Path(description))
        _fetch(uri, tree / name, policy)
    return ResolvedSource("folder", description, tree, _hash_tree(tree))


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def _check_member(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise DataError(f"{archive}: entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise DataError(f"{archive}: entry {name!r} escapes the target folder")


def _check_totals(archive: Path, entries: int, total_bytes: int) -> None:
    if entries > MAX_ARCHIVE_ENTRIES:
        raise DataError(f"{archive}: {entries} entries, more than {MAX_ARCHIVE_ENTRIES}")
    if total_bytes > MAX_ARCHIVE_BYTES:
        raise DataError(
            f"{archive}: unpacks to {total_bytes} bytes, more than {MAX_ARCHIVE_BYTES} "
            "(possible archive bomb)"
        )


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a .tar.gz/.tgz/.zip after checking every entry: links, escapes, bombs are errors.

    The declared sizes bound what is written: zipfile and tarfile refuse to write more than an
    entry declares.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                infos = zipped.infolist()
                for info in infos:
                    _check_member(info.filename, archive)
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise DataError(f"{archive}: entry {info.filename!r} is a symbolic link")
                _check_totals(archive, len(infos), sum(info.file_size for info in infos))
                zipped.extractall(dest)
            return
        with tarfile.open(archive, "r:gz") as tarred:
            members = tarred.getmembers()
            for member in members:
                _check_member(member.name, archive)
                if member.issym() or member.islnk():
                    raise DataError(f"{archive}: entry {member.name!r} is a link")
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"{archive}: entry {member.name!r} is not a file or folder")
            _check_totals(archive, len(members), sum(member.size for member in members))
            tarred.extractall(dest, members=members, filter="data")
    except DataError:
        raise
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        zlib.error,
        struct.error,
        ValueError,  # bad headers, names that do not decode
        NotImplementedError,  # zip: unknown compression or version
        RuntimeError,  # zip: "encrypted" flag set
    ) as error:
        raise DataError(f"{archive}: corrupt or unreadable archive ({error})") from None
