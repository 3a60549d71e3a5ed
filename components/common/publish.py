"""Publish a folder of files plus its manifest into the store, all or nothing, create-only.

GCS has no rename: each file is a create-only upload, then the manifest is created last with a
does-not-exist precondition, so a reader never trusts files without their manifest (a file that
exists was written by a concurrent or earlier run of the same content-addressed folder). Local
disk: everything goes into a staging folder that is renamed into place in one step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from components.common import storage


def publish_folder(folder: Path, names: list[str], manifest: tuple[str, str], uri: str) -> bool:
    """Publish `folder/<name>` for each name and `manifest` (name, text) at `uri`.

    False when another run published the folder first (its manifest exists).
    """
    if not storage.is_gcs(uri):
        return _publish_local(folder, names, manifest, Path(uri))
    for name in names:
        with contextlib.suppress(storage.PreconditionFailedError):
            storage.upload_file(folder / name, storage.join(uri, name), if_generation_match=0)
    manifest_name, text = manifest
    try:
        storage.write_text(storage.join(uri, manifest_name), text, if_generation_match=0)
    except storage.PreconditionFailedError:
        return False
    return True


def _publish_local(folder: Path, names: list[str], manifest: tuple[str, str], target: Path) -> bool:
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        staging.chmod(storage.dir_mode())  # mkdtemp makes it private
        for name in names:
            shutil.copyfile(folder / name, staging / name)  # plain umask modes
        manifest_name, text = manifest
        (staging / manifest_name).write_text(text)
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        try:
            os.rename(staging, target)  # atomic; refuses a non-empty target
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
    except OSError as error:
        raise storage.StorageError(
            f"publishing {target}: {error.strerror or error} ({error.filename or target})"
        ) from error
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return True
