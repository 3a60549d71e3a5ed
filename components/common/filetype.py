"""Name a file's type from its first bytes, for error messages that never quote the bytes."""

from __future__ import annotations

import codecs
from pathlib import Path

_MAGIC = (
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip (empty)"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"%PDF", "PDF"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x7fELF", "ELF executable"),
)


def describe_bytes(head: bytes) -> str:
    """A short type name for data starting with `head` (e.g. "HTML", "gzip", "unknown binary")."""
    if not head:
        return "empty"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "HTML"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "XML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    try:
        # Incremental: a character cut at the end of `head` is not an error.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "unknown binary"
    if any(ord(char) < 32 and char not in "\t\r\n\f" for char in text):
        return "unknown binary"
    return "text"


def describe_file(path: str | Path, size: int = 512) -> str:
    """`describe_bytes` of a file's first bytes."""
    with open(path, "rb") as handle:
        return describe_bytes(handle.read(size))
