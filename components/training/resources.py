"""Local resources of a training run: scratch folder, weights file, optimizer."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from components.common import storage
from components.common.dataset import DataError
from components.common.digest import file_digest, json_digest


def make_optimizer(name: str, learning_rate: float):
    """A fresh optimizer by name."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=1e-4)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    return keras.optimizers.RMSprop(learning_rate)


def resolve_weights(uri: str | None, cache: Path) -> tuple[str | None, str | None]:
    """Make the weights file local (keeping its name: Keras picks the loader by suffix)."""
    if uri is None:
        return None, None
    if storage.is_gcs(uri):
        local = cache / "weights" / json_digest(uri)[:12] / uri.rsplit("/", 1)[-1]
        if not local.exists():
            storage.download_file(uri, local)
    else:
        local = Path(uri)
        if not local.is_file():
            raise DataError(f"{uri}: weights file not found")
    return str(local), file_digest(local)


@contextlib.contextmanager
def scratch(cache_dir: str | None):
    """The local cache folder, or a temporary one."""
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        yield Path(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="training-") as tmp:
        yield Path(tmp)
