"""Ingest the image-folder layout `train/<class>/*.png|*.jpg`, `test/<class>/...`.

Class names come from folder names (sorted). Only PNG and JPEG are accepted, checked by
content, not by extension. Pillow's decompression-bomb warning is an error. Images keep their
native size; a dataset with mixed sizes needs an explicit target size.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from components.common.dataset import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# MPO is how Pillow reports camera JPEGs that carry extra pictures; the first one is decoded.
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "MPO"})
GRAYSCALE_MODES = frozenset({"1", "L"})
# 16-bit and float pixels do not fit uint8 shards; converting would silently clip them.
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "F"})


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


def decode_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG bytes fully; bombs, other formats and corrupt data are `DataError`s."""
    if not data:
        raise DataError(f"{name}: zero-byte image")
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise DataError(f"{name}: format {image.format}, only PNG and JPEG are accepted")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{name}: image too large, possible decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: cannot decode, not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name}: corrupt image ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    if image.mode in WIDE_MODES:
        raise DataError(
            f"{name}: {image.mode} pixels (16-bit or float) are not supported; "
            "save the images as 8-bit grayscale or RGB"
        )
    return image


def load_split(
    classes: dict[str, list[Path]],
    class_names: tuple[str, ...],
    *,
    max_pixels: int,
    image_size: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a split into images (N, H, W, C) uint8 and labels (N,) int64.

    Channels: 1 when every image is grayscale, else 3 (RGB). Sizes must agree unless
    `image_size` (height, width) is given, in which case every image is resized to it.
    """
    decoded: list[Image.Image] = []
    labels: list[int] = []
    first_size: tuple[int, int] | None = None
    first_path: Path | None = None
    for label, class_name in enumerate(class_names):
        for path in classes[class_name]:
            image = decode_image(path.read_bytes(), str(path), max_pixels)
            if image_size is not None:
                image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            elif first_size is None:
                first_size, first_path = image.size, path
            elif image.size != first_size:
                raise DataError(
                    f"{path}: size {image.size[0]}x{image.size[1]} differs from "
                    f"{first_path}'s {first_size[0]}x{first_size[1]}; "
                    "pass --image-size HxW to resize every image"
                )
            decoded.append(image)
            labels.append(label)
    grayscale = all(image.mode in GRAYSCALE_MODES for image in decoded)
    mode = "L" if grayscale else "RGB"
    arrays = [np.asarray(image.convert(mode), dtype=np.uint8) for image in decoded]
    images = np.stack(arrays)
    if grayscale:
        images = images[..., np.newaxis]
    return images, np.asarray(labels, dtype=np.int64)
