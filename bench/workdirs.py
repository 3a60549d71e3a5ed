"""Work folders of the benchmarks, keyed by what they hold, and path-free results.

A folder of derived data (PNG copies of a split, for the blog's generator) is named after the
dataset's content version (which already covers the source's bytes and every versioned prep
parameter, the subset size included), the image size, the split sizes and the run kind (quick or
full). Two runs that need different data therefore never share a folder, and a folder is reused
only when it was written completely (a marker file written last).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / "work"
COMPLETE = ".complete.json"


def data_key(manifest, *, quick: bool, image_size: int | None = None) -> str:
    """A folder name for data derived from `manifest`: version, size, split sizes, quick/full."""
    height, width = manifest.image_shape[:2]
    size = f"{image_size}px" if image_size else f"{height}x{width}"
    counts = "-".join(
        f"{name[:2]}{manifest.splits[name].count}" for name in sorted(manifest.splits)
    )
    return f"{manifest.version}-{size}-{counts}-{'quick' if quick else 'full'}"


def keyed_folder(kind: str, manifest, *, quick: bool, image_size: int | None = None,
                 root: Path = WORK) -> Path:  # fmt: skip
    """`root/<kind>/<data_key>`: the folder for one kind of derived data of one dataset."""
    return Path(root) / kind / data_key(manifest, quick=quick, image_size=image_size)


def complete_folder(folder: Path, write: Callable[[Path], dict]) -> dict:
    """Reuse `folder` when a previous run finished it; else build it with `write(tmp)`.

    `write` fills a fresh temporary folder next to `folder` and returns facts about it; the
    folder is renamed into place only once `write` returned, so a run that stopped half-way is
    never reused.
    """
    marker = folder / COMPLETE
    if marker.is_file():
        return json.loads(marker.read_text())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        facts = write(tmp)
        (tmp / COMPLETE).write_text(json.dumps(facts))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return facts


def relative(path: str | Path) -> str:
    """A path for the results: relative to the repository when inside it, else its last part."""
    text = str(path)
    try:
        return str(Path(text).resolve().relative_to(REPO))
    except ValueError:
        return Path(text).name


def path_free(value):
    """`value` with every absolute path (a string starting with "/") made relative (see above)."""
    if isinstance(value, dict):
        return {key: path_free(item) for key, item in value.items()}
    if isinstance(value, list):
        return [path_free(item) for item in value]
    if isinstance(value, str) and value.startswith("/"):
        return relative(value)
    return value
