"""Real photos: header probing, orientation, colour-mode conversion and aspect-preserving resize.

Two passes keep data prep's memory flat: `probe` reads only a file's header (size, mode, EXIF
orientation), so the size policy is chosen before any pixel is decoded; `read_photo` then
decodes one image at a time into the dataset's shape.

Conversions (every image ends up 8-bit grayscale or 8-bit RGB):
- EXIF orientation is applied (a phone photo taken upright is stored upright).
- Alpha (RGBA, LA, palette with transparency) is composited on white, `BACKGROUND`.
- CMYK, YCbCr and palette images become RGB.
- 16-bit grayscale (PNG) keeps its top 8 bits (value / 257, rounded), so nothing is clipped.
- Float pixels and other modes are refused, naming the file.
Large JPEGs are decoded at a reduced scale (JPEG draft mode: 1/2, 1/4 or 1/8) whenever the
target size allows, so a 6000x4000 photo never costs its full 24 Mpixels.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from components.common.config import ConfigError
from components.common.dataset import DataError

# MPO is how Pillow reports camera JPEGs that carry extra pictures; the first one is decoded.
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "MPO"})
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
COLOUR_MODES = frozenset({"RGB", "RGBX", "CMYK", "YCbCr", "P", "RGBA", "RGBa", "PA"})
BACKGROUND = (255, 255, 255)  # alpha is composited on white
DEFAULT_SIZE = 150  # mixed sizes are resized to DEFAULT_SIZE x DEFAULT_SIZE (InceptionV3's input)
MAX_NATIVE_SIDE = 512  # uniform sizes are kept only up to this side; larger ones are resized
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image 90 deg
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Probe:
    """What a file's header says: its upright size and whether it is grayscale."""

    width: int
    height: int
    grayscale: bool


@dataclass(frozen=True)
class SizePolicy:
    """How every image of a dataset is sized: kept as is, or resized and centre-cropped."""

    policy: str  # "native" (uniform sizes kept) or "centre_crop"
    size: tuple[int, int]  # height, width of every stored image
    requested: str  # "auto" or the user's HxW

    @property
    def resizes(self) -> bool:
        """Whether images are resized."""
        return self.policy != "native"


def open_image(path: Path | bytes, max_pixels: int, name: str | None = None) -> Image.Image:
    """Open (header only) a PNG/JPEG file or bytes; bad input is a `DataError` naming it."""
    name = name or str(path)
    empty = not path if isinstance(path, bytes) else path.stat().st_size == 0
    if empty:
        raise DataError(f"{name}: zero-byte image")
    with _bomb_guard(name, max_pixels):
        image = Image.open(io.BytesIO(path) if isinstance(path, bytes) else path)
        if image.format not in ALLOWED_FORMATS:
            image.close()
            raise DataError(f"{name}: format {image.format}, only PNG and JPEG are accepted")
    return image


@contextlib.contextmanager
def _bomb_guard(name: str, max_pixels: int) -> Iterator[None]:
    """Pillow's size limit set to `max_pixels`, its warnings errors, its failures `DataError`s."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{name}: image too large, possible decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: cannot decode, not a PNG or JPEG image") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name}: corrupt image ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1  # unreadable EXIF: keep the stored orientation


def probe(path: Path, max_pixels: int) -> Probe:
    """Header-only look at one image: upright size and grayscale or not. Nothing is decoded."""
    with open_image(path, max_pixels) as image:
        width, height = image.size
        if _orientation(image) in SWAPPING_ORIENTATIONS:
            width, height = height, width
        _check_mode(image.mode, str(path))
        return Probe(width, height, image.mode in GRAYSCALE_MODES)


def _check_mode(mode: str, name: str) -> None:
    if mode not in GRAYSCALE_MODES | COLOUR_MODES:
        detail = "float pixels" if mode == "F" else f"{mode} pixels"
        raise DataError(
            f"{name}: {detail} are not supported; save the images as 8-bit or 16-bit "
            "grayscale, RGB, RGBA, palette or CMYK"
        )


def choose_size(sizes: set[tuple[int, int]], requested: tuple[int, int] | None) -> SizePolicy:
    """The size policy: the requested size; else uniform sizes kept; else DEFAULT_SIZE, cropped.

    `sizes` are the distinct (height, width) of the images, upright.
    """
    if requested is not None:
        return SizePolicy("centre_crop", requested, f"{requested[0]}x{requested[1]}")
    if len(sizes) == 1:
        (size,) = sizes
        if max(size) <= MAX_NATIVE_SIDE:
            return SizePolicy("native", size, "auto")
    return SizePolicy("centre_crop", (DEFAULT_SIZE, DEFAULT_SIZE), "auto")


def parse_image_size(text: str) -> tuple[int, ...]:
    """`auto` (or empty) -> (); `HxW` or `N` -> (height, width). Bad text is a ConfigError."""
    cleaned = text.strip().lower()
    if cleaned in ("", "auto"):
        return ()
    height, _, width = cleaned.partition("x")
    try:
        size = int(height), int(width or height)
    except ValueError:
        raise ConfigError(f"image_size: expected auto, HxW or N, got {text!r}") from None
    if min(size) < 1:
        raise ConfigError(f"image_size: sides must be positive, got {text!r}")
    return size


def crop_box(width: int, height: int, target: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred source box with the target's aspect ratio (the largest that fits)."""
    target_height, target_width = target
    scale = max(target_width / width, target_height / height)
    box_width, box_height = min(width, target_width / scale), min(height, target_height / scale)
    left, top = max(0.0, (width - box_width) / 2), max(0.0, (height - box_height) / 2)
    return (left, top, min(width, left + box_width), min(height, top + box_height))


def _draft(image: Image.Image, target: tuple[int, int]) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the crop still has enough pixels."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size
    # Conservative whatever the EXIF rotation: both sides stay at least the target's larger one.
    scale = max(target) / min(width, height)
    if scale < 1:
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def _sixteen_to_eight(image: Image.Image, name: str) -> Image.Image:
    pixels = np.asarray(image, dtype=np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(f"{name}: {image.mode} pixels outside 0..65535 are not supported")
    return Image.fromarray(np.rint(pixels / 257.0).astype(np.uint8), "L")


def _composite(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_eight_bit(image: Image.Image, name: str) -> Image.Image:
    """Grayscale `L` or `RGB`: alpha composited on `BACKGROUND`, 16-bit scaled, CMYK converted."""
    mode = image.mode
    _check_mode(mode, name)
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_to_eight(image, name)
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        composited = _composite(image)
        return composited.convert("L") if mode in ("LA", "La") else composited
    if mode in ("1", "L"):
        return image.convert("L")
    return image.convert("RGB")


def read_photo(
    path: Path | bytes,
    max_pixels: int,
    channels: int,
    sizing: SizePolicy,
    source_name: str | None = None,
) -> np.ndarray:
    """Decode one image into uint8 [H, W, channels] at the policy's size."""
    name = source_name or str(path)
    image = open_image(path, max_pixels, name)
    with image, _bomb_guard(name, max_pixels):
        if sizing.resizes:
            _draft(image, sizing.size)
        image.load()
        upright = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image
        eight = to_eight_bit(upright, name)
        eight = eight.convert("L" if channels == 1 else "RGB")
        height, width = sizing.size
        if sizing.resizes:
            box = crop_box(eight.width, eight.height, sizing.size)
            eight = eight.resize((width, height), Image.Resampling.BILINEAR, box=box)
        elif eight.size != (width, height):
            raise DataError(f"{name}: size {eight.width}x{eight.height}, expected {width}x{height}")
        pixels = np.asarray(eight, dtype=np.uint8)
    return pixels[..., np.newaxis] if channels == 1 else pixels
