"""How shards store images: raw uint8 bytes, PNG or JPEG (measured in docs/BENCHMARKS.md).

`auto` keeps small images raw (at Fashion-MNIST's 28x28, 784 bytes, an encoded file saves
little and costs a decode) and stores anything larger than `RAW_MAX_PIXELS` as JPEG at
`JPEG_QUALITY`: photos are about 11x smaller than raw and decode 3x faster than PNG; training
decodes them once and caches the decoded pixels (in RAM within its budget, else in a file).
`png` is the lossless choice for sources whose exact pixels matter.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from components.common.dataset import IMAGE_ENCODINGS

SHARD_ENCODINGS = ("auto", *IMAGE_ENCODINGS)
RAW_MAX_PIXELS = 64 * 64
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # fast: higher levels shrink photos by a few percent at 3-5x the time


def choose_encoding(requested: str, size: tuple[int, int]) -> str:
    """The shard encoding: `requested`, or for `auto` raw up to RAW_MAX_PIXELS, else JPEG."""
    if requested not in SHARD_ENCODINGS:
        raise ValueError(f"shard_encoding must be one of {SHARD_ENCODINGS}, got {requested!r}")
    if requested != "auto":
        return requested
    return "raw" if size[0] * size[1] <= RAW_MAX_PIXELS else "jpeg"


def encode(pixels: np.ndarray, encoding: str) -> bytes:
    """One uint8 [H, W, C] image as shard bytes."""
    if encoding == "raw":
        return pixels.tobytes()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    if encoding == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
