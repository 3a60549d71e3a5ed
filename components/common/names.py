"""Names that become paths: one strict pattern each, checked wherever a name enters.

A dataset or model name (`--name`, `--dataset`, a manifest's `name`, a backbone key) is lower
case letters, digits, `_`, `.` and `-`, starts with a letter or digit, at most 63 characters, and
never holds `..`. A file name read from the store (shard, checkpoint, weights file) is a single
path segment of letters, digits, `_`, `.` and `-` (no `..`, no leading dot). Paths built from
such names are checked to resolve inside their folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from components.common.config import ConfigError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
MD5_PATTERN = re.compile(r"[0-9a-f]{32}")


def _matches(pattern: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and bool(pattern.fullmatch(value)) and ".." not in value


def is_name(value: object) -> bool:
    """Whether `value` is a valid dataset or model name."""
    return _matches(NAME_PATTERN, value)


def is_file_name(value: object) -> bool:
    """Whether `value` is a plain file name safe to join to a folder."""
    return _matches(FILE_NAME_PATTERN, value)


def check_name(value: object, what: str = "name") -> str:
    """Return `value` if it is a valid dataset or model name, else raise ConfigError naming it."""
    if not is_name(value):
        rule = "lower-case letters, digits, _ . -; no '..'"
        raise ConfigError(f"{what} must match {NAME_PATTERN.pattern} ({rule}), got {value!r}")
    return value


def check_file_name(value: object, what: str = "file name") -> str:
    """Return `value` if it is a plain file name, else raise ConfigError naming it."""
    if not is_file_name(value):
        pattern = FILE_NAME_PATTERN.pattern
        raise ConfigError(
            f"{what} must be a plain file name matching {pattern} (no '..', no '/'), got {value!r}"
        )
    return value


def child_path(folder: str | Path, name: str, what: str = "file name") -> Path:
    """`folder/name` for a checked file name, verified to resolve inside `folder`."""
    check_file_name(name, what)
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ConfigError(f"{what} {name!r} resolves outside {root}")
    return Path(folder) / name
