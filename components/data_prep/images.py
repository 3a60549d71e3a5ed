"""Ingest the image-folder layout `train/<class>/*.png|*.jpg`, `test/<class>/...`.

Class names come from folder names (sorted). Only PNG and JPEG are accepted, checked by
content, not by extension (photos.py decodes them; folder.py reads the tree in two passes).
"""

from __future__ import annotations

from pathlib import Path

from components.common.dataset import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def find_root(folder: Path) -> Path:
    """The folder that holds `train/` and `test/`: the given one, or its single child."""
    if (folder / "train").is_dir():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1 and (children[0] / "train").is_dir():
        return children[0]
    raise DataError(f"{folder}: no train/ folder (expected train/<class>/*.png and test/<class>/)")


def list_split(root: Path, split: str) -> dict[str, list[Path]]:
    """Map class name to its image files for one split; empty classes are an error."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: missing {split}/ folder")
    classes: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if not p.name.startswith(".")):
        if not class_dir.is_dir():
            raise DataError(f"{class_dir}: expected a class folder, found a file")
        files = sorted(p for p in class_dir.iterdir() if not p.name.startswith("."))
        if not files:
            raise DataError(f"{class_dir}: empty class folder")
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                raise DataError(f"{path}: not a PNG or JPEG file")
        classes[class_dir.name] = files
    if not classes:
        raise DataError(f"{split_dir}: no class folders")
    return classes
