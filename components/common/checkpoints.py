"""Checkpoint lifetime: training keeps its checkpoint; whoever consumes the result releases it.

Training leaves its checkpoint (every phase marked `done`) in place after it has written its
outputs, so a rerun after a kill at any point, before or after the outputs are written or
uploaded by the orchestrator, publishes the finished model without training again. The step that
consumes the published result (compare) releases the checkpoint once it holds that result.
Only a folder below `<store>/checkpoints/` is ever deleted: the URI comes from a file in the
store, so it is checked, not trusted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common import storage
from components.common.logging import get_logger

log = get_logger("checkpoints")

FOLDER = "checkpoints"


def release(store: str, checkpoint_dir: object) -> bool:
    """Delete `checkpoint_dir` when it lies below `<store>/checkpoints/`; True if it did."""
    if not checkpoint_dir or not isinstance(checkpoint_dir, str):
        return False
    if not _inside(storage.join(store, FOLDER), checkpoint_dir):
        log.warning("checkpoint_not_released", reason="outside the store's checkpoints folder")
        return False
    for uri in storage.list_uris(checkpoint_dir):
        storage.delete(uri)
    if not storage.is_gcs(checkpoint_dir):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("checkpoint_released", uri=checkpoint_dir)
    return True


def _inside(root: str, uri: str) -> bool:
    """Whether `uri` names a folder strictly below `root` (no `..` or `.` segments)."""
    if storage.is_gcs(root) != storage.is_gcs(uri):
        return False
    if ".." in uri.split("/") or "/./" in uri:
        return False
    if storage.is_gcs(uri):
        return uri.startswith(root.rstrip("/") + "/")
    return (
        Path(uri).resolve().is_relative_to(Path(root).resolve())
        and Path(uri).resolve() != Path(root).resolve()
    )
