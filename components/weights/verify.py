"""Checks on a downloaded weights file: HDF5 signature, size, sha256 and md5."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from components.common.dataset import DataError
from components.common.filetype import describe_file

# The HDF5 superblock signature; it sits at byte 0 or, after a user block, at 512, 1024, ...
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ChecksumMismatchError(DataError):
    """The file's hash differs from the pinned one."""


@dataclass(frozen=True)
class Digests:
    """Size and hashes of one file."""

    size: int
    sha256: str
    md5: str


def _signature_offsets(size: int) -> list[int]:
    offsets, offset = [0], 512
    while offset + len(HDF5_SIGNATURE) <= size:
        offsets.append(offset)
        offset *= 2
    return offsets


def check_hdf5(path: Path, name: str) -> None:
    """Raise `DataError` unless the file carries the HDF5 signature (Keras .h5 weights do)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        for offset in _signature_offsets(size):
            handle.seek(offset)
            if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return
    # The type from the magic number, never the bytes: they may be a secret (a local file,
    # an answer behind a redirect).
    kind = describe_file(path)
    raise DataError(
        f"{name}: not an HDF5 weights file ({size} bytes, looks like "
        f"{'an HTML page' if kind == 'HTML' else kind}); "
        "the server may have answered with an error page"
    )


def digests(path: Path) -> Digests:
    """sha256 and md5 of a file in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digests(size=size, sha256=sha256.hexdigest(), md5=md5.hexdigest())


def check_hashes(actual: Digests, sha256: str | None, md5: str | None, name: str) -> None:
    """Raise `ChecksumMismatchError` naming the expected and actual hash."""
    for algorithm, expected, got in (("sha256", sha256, actual.sha256), ("md5", md5, actual.md5)):
        if expected is not None and expected.lower() != got:
            raise ChecksumMismatchError(
                f"{name}: {algorithm} mismatch: expected {expected.lower()}, got {got} "
                f"({actual.size} bytes)"
            )


def verify(path: Path, name: str, sha256: str | None, md5: str | None) -> Digests:
    """Check signature and pinned hashes; return the file's digests."""
    check_hdf5(path, name)
    actual = digests(path)
    check_hashes(actual, sha256, md5, name)
    return actual
