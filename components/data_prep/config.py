"""The data-prep step's settings: every parameter defined once, here."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.config import ConfigError, names, option
from components.common.http import DEFAULT_MAX_BYTES
from components.common.local_roots import local_roots_option
from components.common.names import check_name
from components.data_prep.encoding import SHARD_ENCODINGS
from components.data_prep.photos import parse_image_size


@dataclass(frozen=True)
class PrepConfig:
    """Data-prep settings. Those marked (versioned) change the dataset version."""

    store: str = option("store", "gs://bucket/prefix or a local folder")
    source: str = option(
        "auto",
        "IDX folder, base URL or gs:// prefix; image-folder tree; .tar.gz/.zip archive; "
        "auto: the Debian Fashion-MNIST files if installed, else the official URL. Never put "
        "credentials in it (user:password@, signed query strings): see docs/SECURITY.md",
    )
    dataset_name: str = option(
        "fashion_mnist",
        "dataset name, [a-z0-9][a-z0-9_.-]{0,62} without '..': <store>/datasets/<name>/<version>/",
        aliases=("--name",),
    )
    val_fraction: float = option(
        0.1, "(versioned) share of each train class held out for validation"
    )
    seed: int = option(42, "(versioned) seeds the subset and the hold-out")
    limit: int = option(0, "(versioned) at most this many images per source split; 0: all")
    records_per_shard: int = option(10_000, "(versioned) TFRecord records per shard")
    class_names: tuple[str, ...] = option(
        (), "(versioned) comma-separated IDX class names; empty: Fashion-MNIST's", parse=names
    )
    image_size: tuple[int, ...] = option(
        (),
        "(versioned) image folders: HxW (or N) resizes every image (aspect kept, centre crop); "
        "auto or empty: uniform sizes kept, mixed sizes to 150x150 (docs/steps.md)",
        parse=parse_image_size,
    )
    shard_encoding: str = option(
        "auto",
        "(versioned) how shards store images: raw, png or jpeg; auto: JPEG above 64x64, else raw",
        choices=SHARD_ENCODINGS,
    )
    max_image_pixels: int = option(50_000_000, "larger images are refused as decompression bombs")
    work_dir: str = option("", "scratch folder; empty: a temporary one")
    download_attempts: int = option(6, "tries per remote file before the source is unreachable")
    download_initial_wait_s: float = option(
        1.0, "first retry backoff in seconds; doubles per retry, with jitter"
    )
    max_download_bytes: int = option(DEFAULT_MAX_BYTES, "largest file accepted from a URL (bytes)")
    download_deadline_s: float = option(
        3600.0, "longest time one remote file may take, retries included (seconds)"
    )
    redirect_hosts: tuple[str, ...] = option(
        (),
        "comma-separated hosts an https redirect may lead to besides the URL's own",
        parse=names,
        aliases=("--redirect-host",),
    )
    local_roots: tuple[str, ...] = local_roots_option("source")

    def __post_init__(self) -> None:
        """Validate at start-up."""
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.limit < 0:
            raise ConfigError(f"limit must be positive (0: all), got {self.limit}")
        if self.records_per_shard < 1:
            raise ConfigError(f"records_per_shard must be positive, got {self.records_per_shard}")
        check_name(self.dataset_name, "dataset_name")
        if self.max_download_bytes < 1 or self.download_deadline_s <= 0:
            raise ConfigError("max_download_bytes and download_deadline_s must be positive")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"image_size must be two positive sizes, got {self.image_size}")

    def versioned_params(self) -> dict:
        """The parameters that, with the source content, define the dataset version."""
        return {
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "limit": self.limit or None,
            "records_per_shard": self.records_per_shard,
            "class_names": list(self.class_names) if self.class_names else None,
            "image_size": list(self.image_size) if self.image_size else None,
            **({"shard_encoding": self.shard_encoding} if self.shard_encoding != "auto" else {}),
        }
