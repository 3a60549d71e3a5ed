"""Lineage: which code and which libraries produced a model or a metrics file.

The git commit is baked into the images at build time (`TL_GIT_COMMIT`, or a `GIT_COMMIT` file
next to the package); in a checkout it comes from `git rev-parse`; otherwise it is "unknown".
"""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = "transfer-learning-pipeline"
COMMIT_ENV = "TL_GIT_COMMIT"
COMMIT_FILE = Path(__file__).resolve().parents[2] / "GIT_COMMIT"
LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "kfp", "numpy")
UNKNOWN = "unknown"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str:
    """The code's git commit: build-time env var or file, else the checkout's HEAD, else unknown."""
    baked = os.environ.get(COMMIT_ENV, "").strip()
    if baked:
        return baked
    if COMMIT_FILE.is_file():
        return COMMIT_FILE.read_text().strip() or UNKNOWN
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=COMMIT_FILE.parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return done.stdout.strip() or UNKNOWN


@functools.cache
def lineage() -> dict[str, object]:
    """Package version, git commit and the versions of the libraries that are installed."""
    libraries = {name: v for name in LIBRARIES if (v := _version(name)) is not None}
    return {
        "package": PACKAGE,
        "version": _version(PACKAGE) or UNKNOWN,
        "git_commit": git_commit(),
        "libraries": libraries,
    }


def as_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """A lineage record as flat KFP artifact metadata: code_version, git_commit, <lib>_version."""
    libraries = record.get("libraries") or {}
    return {
        "code_version": record.get("version"),
        "git_commit": record.get("git_commit"),
        **{f"{name}_version": version for name, version in libraries.items()},
    }
