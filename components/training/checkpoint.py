"""Resume across kills and preemption: BackupAndRestore mirrored into the store, and SIGTERM.

Keras' BackupAndRestore writes to a local folder. `StoreBackupAndRestore` keeps that folder as
a working copy and, after every save, uploads it to `<checkpoint_dir>/<phase>/state-<n>-<id>/`
and only then points `<checkpoint_dir>/<phase>/LATEST.json` at it (the previous copy is deleted
after the switch). A save cut short therefore never poisons the resume: LATEST still names the
last complete copy. At start the copy LATEST names is pulled into the working folder, and
BackupAndRestore restores weights, optimizer state and the epoch from it.

SIGTERM (spot preemption gives about 15 s) sets a flag; at the end of the running batch the
model is saved and `TrainingInterrupted` is raised, which the CLI turns into exit status 143.
"""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from pathlib import Path

import keras

from components.common import storage
from components.common.logging import get_logger
from components.common.names import check_file_name, child_path
from components.common.result import HISTORY_FILE

log = get_logger("training")

LATEST = "LATEST.json"
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the orchestrator retries


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint."""


class StoreBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose backups are mirrored atomically into a store folder."""

    def __init__(self, store_dir: str, local_dir: Path, history: dict, extra: dict):
        super().__init__(str(local_dir), save_freq="epoch", delete_checkpoint=False)
        self.store_dir = store_dir
        self.local_dir = Path(local_dir)
        self.history = history  # shared with EpochRecorder; saved with each backup
        self.extra = extra  # facts that must match on resume (classes, model, input size)
        self.resumed_epoch = 0

    # --- store side ----------------------------------------------------------------------

    def latest(self) -> dict | None:
        """The LATEST pointer of this phase, or None."""
        uri = storage.join(self.store_dir, LATEST)
        if not storage.exists(uri):
            return None
        try:
            return json.loads(storage.read_text(uri))
        except ValueError as error:
            raise ValueError(f"{uri}: unreadable checkpoint pointer ({error})") from None

    def pull(self) -> dict | None:
        """Replace the working copy with the store's latest backup; return its pointer."""
        shutil.rmtree(self.local_dir, ignore_errors=True)
        self.local_dir.mkdir(parents=True)
        pointer = self.latest()
        if pointer is None:
            return None
        files = _checked_files(pointer, storage.join(self.store_dir, LATEST))
        for key, value in self.extra.items():
            if pointer.get("extra", {}).get(key) != value:
                raise ValueError(
                    f"{self.store_dir}: the checkpoint was made with {key}="
                    f"{pointer.get('extra', {}).get(key)!r}, this run has {value!r}; "
                    "use a fresh checkpoint_dir"
                )
        for name in files:
            source = storage.join(self.store_dir, pointer["folder"], name)
            storage.download_file(source, child_path(self.local_dir, name, "checkpoint file"))
        saved = json.loads((self.local_dir / HISTORY_FILE).read_text())
        for key in self.history:
            self.history[key][:] = saved.get(key, [])
        return pointer

    def push(self, done: bool = False) -> None:
        """Upload the working copy, then switch LATEST to it, then drop the previous copy."""
        (self.local_dir / HISTORY_FILE).write_text(json.dumps(self.history))
        previous = self.latest()
        epoch = self._current_epoch
        folder = f"state-{epoch:04d}-{uuid.uuid4().hex[:8]}"
        files = sorted(p.name for p in self.local_dir.iterdir() if p.is_file())
        for name in files:
            storage.upload_file(self.local_dir / name, storage.join(self.store_dir, folder, name))
        pointer = {"epoch": epoch, "folder": folder, "files": files, "done": done}
        pointer["extra"] = self.extra
        storage.write_text(storage.join(self.store_dir, LATEST), json.dumps(pointer, indent=2))
        if previous and previous["folder"] != folder:
            for name in previous["files"]:
                storage.delete(storage.join(self.store_dir, previous["folder"], name))
        log.info("checkpoint_saved", uri=self.store_dir, epoch=epoch, done=done)

    # --- Keras hooks -----------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        """Pull the store's latest backup into the working copy, then let Keras restore it."""
        pointer = self.pull()
        super().on_train_begin(logs)
        if pointer is not None:
            self.resumed_epoch = int(pointer["epoch"])
            self._current_epoch = self.resumed_epoch
            log.info("checkpoint_restored", uri=self.store_dir, epoch=self.resumed_epoch)

    def _save_model(self):
        if getattr(self.model, "_diverged", False):
            # Diverged weights must not become the state every retry resumes from.
            log.warning("checkpoint_skipped_diverged", uri=self.store_dir)
            return
        super()._save_model()
        self.push()

    def save_now(self) -> None:
        """Save the current weights at once (the running epoch will be repeated on resume)."""
        self._save_model()

    def on_train_end(self, logs=None):
        """Save the final weights and mark the phase done (not after SIGTERM or NaN)."""
        if self.model.stop_training and getattr(self.model, "_interrupted", False):
            return
        # Final weights (after early stopping restored the best ones) mark the phase done.
        super()._save_model()
        self.push(done=True)


def _checked_files(pointer: object, origin: str) -> list[str]:
    """The file names of a LATEST pointer read from the store, each a plain name (else an error)."""
    try:
        if not isinstance(pointer, dict) or not isinstance(pointer.get("files"), list):
            raise ValueError("no list of files")
        check_file_name(pointer.get("folder"), "checkpoint folder")
        return [check_file_name(name, "checkpoint file") for name in pointer["files"]]
    except ValueError as error:
        raise ValueError(f"{origin}: refusing the checkpoint pointer: {error}") from None


class Preemption:
    """A SIGTERM flag: set by the handler, acted on by `PreemptionGuard` between batches."""

    def __init__(self):
        self.requested = False
        self.in_fit = False
        self._previous = None

    def install(self) -> None:
        """Install the handler (main thread only; elsewhere this is a no-op)."""
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:
            self._previous = None

    def uninstall(self) -> None:
        """Restore the previous handler."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        log.warning("sigterm_received", in_fit=self.in_fit)
        self.requested = True
        if not self.in_fit:
            raise TrainingInterrupted("SIGTERM received outside training; nothing to save")


class PreemptionGuard(keras.callbacks.Callback):
    """On SIGTERM: save a checkpoint after the running batch, then stop."""

    def __init__(self, preemption: Preemption, backup: StoreBackupAndRestore | None):
        super().__init__()
        self.preemption = preemption
        self.backup = backup

    def on_train_begin(self, logs=None):
        """From now on SIGTERM waits for the running batch."""
        self.preemption.in_fit = True

    def on_train_batch_end(self, batch, logs=None):
        """Act on a pending SIGTERM."""
        if not self.preemption.requested:
            return
        self.model._interrupted = True
        self.model.stop_training = True
        if self.backup is not None:
            self.backup.save_now()
        raise TrainingInterrupted("SIGTERM: checkpoint saved, stopping for a retry")

    def on_test_batch_end(self, batch, logs=None):
        """Validation batches too: a long validation must not outlast the grace period."""
        self.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        """From now on SIGTERM stops at once."""
        self.preemption.in_fit = False
