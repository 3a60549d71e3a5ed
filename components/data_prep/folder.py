"""An image-folder source in two passes, so memory does not grow with the number of images.

Pass one (`plan`) lists the files and reads only their headers: classes, labels, sizes and
whether every image is grayscale, which fix the dataset's shape. Pass two (`records`) decodes,
converts, resizes and encodes one image at a time, in the order the shards are written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.data_prep import encoding, photos


@dataclass(frozen=True)
class FolderSplit:
    """One source split: its files and their labels, in the same order."""

    paths: tuple[Path, ...]
    labels: np.ndarray  # int64 [N]


@dataclass(frozen=True)
class FolderPlan:
    """What pass one found: the splits and the shape every image is brought to."""

    splits: dict[str, FolderSplit]
    sizing: photos.SizePolicy
    channels: int  # 1 when every image is grayscale, else 3

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Height, width, channels of every stored image."""
        return (*self.sizing.size, self.channels)


def plan(
    listing: dict[str, dict[str, list[Path]]],
    class_names: tuple[str, ...],
    max_pixels: int,
    requested: tuple[int, int] | None,
) -> FolderPlan:
    """Pass one: labels, distinct sizes and colour from the headers of every file."""
    sizes: set[tuple[int, int]] = set()
    grayscale = True
    splits = {}
    for split, classes in listing.items():
        paths, labels = [], []
        for label, class_name in enumerate(class_names):
            for path in classes[class_name]:
                probe = photos.probe(path, max_pixels)
                sizes.add((probe.height, probe.width))
                grayscale = grayscale and probe.grayscale
                paths.append(path)
                labels.append(label)
        splits[split] = FolderSplit(tuple(paths), np.asarray(labels, dtype=np.int64))
    sizing = photos.choose_size(sizes, requested)
    return FolderPlan(splits, sizing, 1 if grayscale else 3)


def records(
    folder_plan: FolderPlan,
    split: str,
    indices: np.ndarray,
    max_pixels: int,
    image_encoding: str,
) -> Iterator[tuple[bytes, int]]:
    """Pass two: (encoded image, label) for `indices` of a split, decoded one at a time."""
    source = folder_plan.splits[split]
    for index in indices:
        pixels = photos.read_photo(
            source.paths[index], max_pixels, folder_plan.channels, folder_plan.sizing
        )
        yield encoding.encode(pixels, image_encoding), int(source.labels[index])
