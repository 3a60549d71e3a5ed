"""The dataset contract between data prep and training: layout, manifest, shard records.

A dataset lives at `<store>/datasets/<name>/<version>/`:

    train-00000-of-00006.tfrecord ...  validation-... test-...
    manifest.json                      written last: no manifest, no dataset

Each TFRecord record is a `tf.train.Example` with `image` and `label` (int64 index into
`class_names`). `image` holds H*W*C uint8 bytes, row-major, when the manifest's `image_encoding`
is `raw` (the default, and what manifests without the field mean), else a PNG or JPEG file of
the same H, W and C. `preprocessing` says how the images were sized (kept or centre-cropped);
`warnings` lists class-balance concerns found at prep time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common import storage
from components.common.digest import file_digest
from components.common.names import SHA256_PATTERN, child_path, is_file_name, is_name

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
IMAGE_KEY = "image"
LABEL_KEY = "label"
IMAGE_ENCODINGS = ("raw", "png", "jpeg")


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


@dataclass(frozen=True)
class Shard:
    """One TFRecord file of a split."""

    file: str  # file name inside the dataset folder
    sha256: str
    count: int  # records
    bytes: int


@dataclass(frozen=True)
class Split:
    """One split: its size, its class balance and its shards."""

    count: int
    per_class: dict[str, int]
    shards: tuple[Shard, ...]


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to trust and decode a dataset."""

    name: str
    version: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # height, width, channels
    splits: dict[str, Split]
    source: dict[str, Any]  # description, kind, sha256
    params: dict[str, Any]  # the prep parameters that went into the version
    created_at: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    image_encoding: str = "raw"  # raw, png or jpeg (see the module docstring)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # resize policy, size, ...
    warnings: tuple[str, ...] = ()  # tiny classes, strong imbalance

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """Image channels (1 grayscale, 3 RGB)."""
        return self.image_shape[2]

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "manifest") -> Manifest:
        """Parse and validate a manifest; `origin` names it in errors."""
        try:
            raw = json.loads(text)
            if raw.get("format_version") != FORMAT_VERSION:
                raise DataError(
                    f"{origin}: unsupported format_version {raw.get('format_version')!r}, "
                    f"expected {FORMAT_VERSION}"
                )
            splits = {
                name: Split(
                    count=int(split["count"]),
                    per_class={str(k): int(v) for k, v in split["per_class"].items()},
                    shards=tuple(Shard(**shard) for shard in split["shards"]),
                )
                for name, split in raw["splits"].items()
            }
            manifest = cls(
                name=raw["name"],
                version=raw["version"],
                class_names=tuple(raw["class_names"]),
                image_shape=tuple(int(v) for v in raw["image_shape"]),
                splits=splits,
                source=dict(raw["source"]),
                params=dict(raw["params"]),
                created_at=raw["created_at"],
                format_version=raw["format_version"],
                extra=dict(raw.get("extra", {})),
                image_encoding=str(raw.get("image_encoding", "raw")),
                preprocessing=dict(raw.get("preprocessing", {})),
                warnings=tuple(str(w) for w in raw.get("warnings", ())),
            )
        except DataError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(
                f"{origin}: malformed manifest ({type(error).__name__}: {error})"
            ) from None
        missing = [name for name in SPLITS if name not in manifest.splits]
        if missing:
            raise DataError(f"{origin}: manifest lacks splits {missing}")
        if len(manifest.image_shape) != 3 or manifest.channels not in (1, 3):
            raise DataError(f"{origin}: bad image_shape {manifest.image_shape}")
        _check_names(manifest, origin)
        if manifest.image_encoding not in IMAGE_ENCODINGS:
            raise DataError(f"{origin}: unknown image_encoding {manifest.image_encoding!r}")
        return manifest


def _check_names(manifest: Manifest, origin: str) -> None:
    """Names from the store become local paths: each must match its strict pattern."""
    for what, value in (("name", manifest.name), ("version", manifest.version)):
        if not is_name(value):
            raise DataError(f"{origin}: manifest {what} {value!r} is not a valid name")
    for split in manifest.splits.values():
        for shard in split.shards:
            if not is_file_name(shard.file):
                raise DataError(f"{origin}: shard file name {shard.file!r} is not a plain name")
            if not (isinstance(shard.sha256, str) and SHA256_PATTERN.fullmatch(shard.sha256)):
                raise DataError(f"{origin}: shard {shard.file} has no valid sha256")


def dataset_uri(store: str, name: str, version: str) -> str:
    """Where a dataset version lives in the store."""
    return storage.join(store, "datasets", name, version)


def load_manifest(uri: str) -> Manifest:
    """Load the manifest of the dataset at `uri`; a dataset without one is not trusted."""
    manifest_uri = storage.join(uri, MANIFEST_NAME)
    try:
        text = storage.read_text(manifest_uri)
    except storage.NotFoundError:
        raise DataError(
            f"{manifest_uri}: no manifest; the dataset at {uri} is incomplete or does not exist "
            "(run data prep first)"
        ) from None
    return Manifest.from_json(text, origin=manifest_uri)


def fetch_split(uri: str, manifest: Manifest, split: str, cache_dir: str | Path) -> list[Path]:
    """Make a split's shards local (copying from the store as needed) and verify each sha256.

    A shard already in `cache_dir` with the right hash is not copied again. A shard whose hash
    differs from the manifest's is an error naming the shard.
    """
    if split not in manifest.splits:
        raise DataError(f"{uri}: no split {split!r} in the manifest")
    cache = Path(cache_dir) / manifest.name / manifest.version
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in manifest.splits[split].shards:
        source = storage.join(uri, shard.file)
        if storage.is_gcs(uri):
            local = child_path(cache, shard.file, "shard file name")
            if not (local.exists() and file_digest(local) == shard.sha256):
                _download_verified(source, local, shard.sha256)
        else:
            local = Path(source)
            if not local.exists():
                raise DataError(f"{source}: shard listed in the manifest is missing")
        actual = file_digest(local)
        if actual != shard.sha256:
            raise DataError(
                f"{source}: shard sha256 {actual} differs from the manifest's {shard.sha256}"
            )
        paths.append(local)
    return paths


def _download_verified(source: str, local: Path, sha256: str) -> None:
    """Download to a temporary file beside `local`; move it into place only if its hash fits."""
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
    os.close(fd)
    try:
        storage.download_file(source, tmp)
        actual = file_digest(tmp)
        if actual != sha256:
            raise DataError(f"{source}: shard sha256 {actual} differs from the manifest's {sha256}")
        os.replace(tmp, local)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
