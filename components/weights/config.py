"""The weights step's settings: every parameter defined once, here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.common.backbones import BACKBONES, DEFAULT_BACKBONE
from components.common.config import ConfigError, option
from components.common.http import RetryPolicy
from components.common.local_roots import local_roots_option
from components.common.names import is_file_name

NONE = "none"  # weights_url value: no pretrained weights, the backbone trains from scratch
DEFAULT = "default"  # weights_url value: the backbone's published file
_HEX = {"sha256": re.compile(r"[0-9a-fA-F]{64}"), "md5": re.compile(r"[0-9a-fA-F]{32}")}


@dataclass(frozen=True)
class WeightsConfig:
    """Weights settings; validated at start-up."""

    store: str = option("store", "gs://bucket/prefix or a local folder")
    weights_url: str = option(
        DEFAULT,
        "http(s):// URL, gs:// URI or local path of the weights; 'default': the backbone's "
        "published file; 'none': no pretrained weights (train from scratch). Never put "
        "credentials in it (user:password@, signed query strings): see docs/SECURITY.md",
        aliases=("--url",),
    )
    sha256: str = option("", "pinned sha256 of the file; with no hash given, the published one")
    md5: str = option("", "pinned md5, for publishers that give only md5")
    backbone: str = option(DEFAULT_BACKBONE, "backbone the weights are for", choices=(*BACKBONES,))
    filename: str = option("", "file name in the store; empty: the source's file name")
    keras_cache_dir: str = option("", "Keras' cache; empty: $KERAS_HOME/models or ~/.keras/models")
    use_keras_cache: bool = option(
        True, "look in Keras' cache before the network", flag="--keras-cache"
    )
    work_dir: str = option("", "scratch folder; empty: a temporary one")
    retry: RetryPolicy = option(
        help="attempts, backoff, timeouts, size cap, deadline and redirect hosts of downloads",
        factory=RetryPolicy,
        cli=False,
    )
    local_roots: tuple[str, ...] = local_roots_option("weights_url")

    def __post_init__(self) -> None:
        """Validate at start-up."""
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        if not self.weights_url:
            raise ConfigError(
                "weights_url must be a URL, gs:// URI, local path, 'default' or 'none'"
            )
        for algorithm in ("sha256", "md5"):
            value = getattr(self, algorithm)
            if value and not _HEX[algorithm].fullmatch(value):
                raise ConfigError(f"{algorithm} must be a hex digest, got {value!r}")
        if self.filename and not is_file_name(self.filename):
            raise ConfigError(f"filename must be a plain file name, got {self.filename!r}")

    @property
    def pretrained(self) -> bool:
        """False when the backbone is to train from scratch."""
        return self.weights_url.lower() != NONE
