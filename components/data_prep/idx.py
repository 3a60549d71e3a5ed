"""Parse gzipped IDX files (the MNIST / Fashion-MNIST format) into numpy arrays.

Pure functions over bytes: every problem is a `DataError` naming the file.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from components.common.dataset import DataError

# IDX magic: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
# Largest decompressed IDX file accepted (guards against gzip bombs): 4 GiB.
MAX_IDX_BYTES = 4 << 30

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def gunzip(data: bytes, name: str, limit: int = MAX_IDX_BYTES) -> bytes:
    """Decompress a gzip stream, naming the file on a truncated or corrupt stream."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as error:
        raise DataError(f"{name}: not a valid gzip stream ({error})") from None
    if len(out) > limit:
        raise DataError(f"{name}: decompresses to more than {limit} bytes")
    if not decompressor.eof:
        raise DataError(f"{name}: truncated gzip stream (ended after {len(data)} bytes)")
    if decompressor.unused_data:
        # A second concatenated member is legal gzip but never produced by IDX publishers;
        # refusing it also keeps the size limit above a real bound.
        raise DataError(
            f"{name}: {len(decompressor.unused_data)} bytes of trailing data after the gzip stream"
        )
    return out


def parse_idx(data: bytes, name: str, expected_magic: int) -> np.ndarray:
    """Parse decompressed IDX bytes; check the magic, the dimensions and the exact size."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DataError(f"{name}: wrong IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if any(d == 0 for d in dims[1:]):
        raise DataError(f"{name}: IDX dimensions {dims} contain a zero image dimension")
    expected = header + math.prod(dims)  # Python ints: no overflow on patched headers
    if len(data) != expected:
        raise DataError(
            f"{name}: file size {len(data)} does not match the header's dimensions {dims} "
            f"({expected} bytes expected)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_pair(
    images_gz: bytes, labels_gz: bytes, images_name: str, labels_name: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Parse an images/labels pair; return images (N, H, W, 1) uint8 and labels (N,) int64."""
    images = parse_idx(gunzip(images_gz, images_name), images_name, IMAGES_MAGIC)
    labels = parse_idx(gunzip(labels_gz, labels_name), labels_name, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{labels_name}: label {int(labels[bad])} at index {bad} is out of range "
            f"for {num_classes} classes"
        )
    return images[..., np.newaxis], labels.astype(np.int64)
