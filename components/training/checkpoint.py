"""Exact resume across kills and preemption: every piece of training state, mirrored into the store.

A checkpoint is taken at an epoch's end and holds everything that changes the result of the
epochs still to come:
- the model's weights with the optimizer's state (its step count and learning rate included)
  and the layers' random-generator state (dropout, augmentation: Keras keeps it in variables);
- the callbacks' state: early stopping (wait, best value and epoch, and its best weights) and
  the learning-rate plateau (wait, best value, cool-down), through `Resumable` callbacks;
- the history so far.
The data order is a function of the run's seed and the epoch number (`data.per_epoch`), so a
resumed epoch sees the same batches as it would have without the interruption. A run killed at
any point therefore ends with the same weights and metrics as an uninterrupted one.

`StoreCheckpoint` writes the state into a local working folder at every epoch's end, then uploads
it to `<checkpoint_dir>/<phase>/state-<epoch>-<id>/` and only then points
`<checkpoint_dir>/<phase>/LATEST.json` at it (the previous copy is deleted after the switch), so an
upload cut short never poisons the resume. Uploads happen at most every `min_interval` seconds;
the newest local copy is uploaded on SIGTERM and when a phase ends, when it is marked `done`.
A lean checkpoint (the fine-tune phase) holds only what training changes (`lean_variables`):
the frozen layers are rebuilt from the verified weights file, so they need no copy.

SIGTERM (spot preemption gives a grace period) sets a flag; at the end of the running batch the
newest epoch-end state is uploaded when the store lacks it, and `TrainingInterrupted` is raised,
which the CLI turns into exit status 143. The running epoch is then trained again on resume.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from components.common import storage
from components.common.config import ConfigError
from components.common.dataset import DataError
from components.common.logging import get_logger
from components.common.names import check_file_name, child_path

log = get_logger("training")

LATEST = "LATEST.json"
STATE_FILE = "state.json"  # epoch, stopped, callbacks' state, history
WEIGHTS_FILE = "latest.weights.h5"  # model + optimizer + random-generator state
LEAN_FILE = "latest.lean.npz"  # trainable weights + optimizer + random-generator state
BEST_WEIGHTS_FILE = "best_weights.npz"  # early stopping's best weights, when it holds any
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the orchestrator retries


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint."""


@dataclass
class RunFlags:
    """What the callbacks of one fit tell each other (instead of attributes on the model)."""

    interrupted: bool = False  # stopped on SIGTERM: the phase is not done
    diverged: bool = False  # the loss went NaN: no checkpoint of these weights


def _plain(value: Any) -> Any:
    """A JSON-safe number (NumPy scalars to Python; infinities kept as strings)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _number(value: Any) -> Any:
    return float(value) if value in ("inf", "-inf", "nan") else value


class Resumable:
    """A Keras callback mixin whose counters survive a resume.

    `STATE` names the attributes that carry over between epochs; `on_train_begin` resets them
    (Keras' behaviour), then applies the restored values when there are any.
    """

    STATE: tuple[str, ...] = ()
    restored: dict | None = None

    def state(self) -> dict:
        """The attributes in `STATE` as JSON values."""
        return {name: _plain(getattr(self, name)) for name in self.STATE}

    def on_train_begin(self, logs=None):
        """Reset as Keras does, then apply the restored state."""
        super().on_train_begin(logs)
        for name, value in (self.restored or {}).items():
            setattr(self, name, _number(value))


class ResumableEarlyStopping(Resumable, keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters and best weights are part of the checkpoint."""

    STATE = ("wait", "stopped_epoch", "best", "best_epoch")
    restored_best_weights: list | None = None

    def on_train_begin(self, logs=None):
        """Also restore the best weights seen before the interruption."""
        super().on_train_begin(logs)
        if self.restored is not None:
            self.best_weights = self.restored_best_weights


class ResumableReduceLROnPlateau(Resumable, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters are part of the checkpoint (the rate is the optimizer's)."""

    STATE = ("wait", "best", "cooldown_counter")


@dataclass(frozen=True)
class Restored:
    """Where a restored phase stands."""

    epoch: int  # epochs finished
    done: bool  # the phase finished: its final weights are loaded
    stopped: bool  # a callback stopped training at `epoch`: no more epochs to train


def lean_variables(model) -> list:
    """What training changes: trainable weights, the optimizer's state, random-generator state.

    Frozen layers (and frozen BatchNorm statistics, used in inference mode) do not change.
    """
    seeds = [v for v in model.non_trainable_variables if "seed_generator" in v.path]
    return [*model.trainable_variables, *model.optimizer.variables, *seeds]


def save_lean(model, path: Path) -> None:
    """Write `lean_variables(model)` in order, with their paths (for reading, not matching)."""
    variables = lean_variables(model)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(variables)}
    np.savez(tmp, paths=np.array([v.path for v in variables]), **arrays)
    tmp.replace(path)


def load_lean(model, path: Path) -> None:
    """Assign a lean checkpoint to `model`'s variables; count and shapes must match.

    Matched by position, as Keras' own weights files are: layer names differ between builds.
    """
    variables = lean_variables(model)
    with np.load(path, allow_pickle=False) as saved:
        if len(saved.files) != len(variables) + 1:
            raise DataError(
                f"{path}: {len(saved.files) - 1} variables, this model has {len(variables)}"
            )
        for i, variable in enumerate(variables):
            value = saved[f"v{i}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise DataError(f"{path}: {variable.path} has shape {value.shape}")
            variable.assign(value)


class StoreCheckpoint(keras.callbacks.Callback):
    """Epoch-end checkpoints of the whole training state, mirrored atomically into the store.

    Goes last in the callback list, so that the state it saves includes what the other
    callbacks did at the same epoch's end.
    """

    def __init__(
        self,
        store_dir: str,
        local_dir: Path,
        *,
        history: dict,
        extra: dict,
        flags: RunFlags,
        resumables: dict[str, Resumable],
        min_interval: float = 0.0,
        lean: bool = False,
    ):
        super().__init__()
        self.store_dir = store_dir
        self.local_dir = Path(local_dir)
        self.history = history  # shared with EpochRecorder
        self.extra = extra  # facts that must match on resume (classes, model, input size)
        self.flags = flags
        self.resumables = resumables
        self.min_interval = min_interval
        self.lean = lean  # save lean_variables only (a phase with frozen layers)
        self.epoch = 0
        self._uploaded_epoch: int | None = None
        self._last_upload = -math.inf

    # --- store side ----------------------------------------------------------------------

    def latest(self) -> dict | None:
        """The LATEST pointer of this phase, or None."""
        uri = storage.join(self.store_dir, LATEST)
        if not storage.exists(uri):
            return None
        try:
            return json.loads(storage.read_text(uri))
        except ValueError as error:
            raise DataError(f"{uri}: unreadable checkpoint pointer ({error})") from None

    def pull(self) -> dict | None:
        """Replace the working copy with the store's latest checkpoint; return its pointer."""
        shutil.rmtree(self.local_dir, ignore_errors=True)
        self.local_dir.mkdir(parents=True)
        pointer = self.latest()
        if pointer is None:
            return None
        files = _checked_files(pointer, storage.join(self.store_dir, LATEST))
        for key, value in self.extra.items():
            if pointer.get("extra", {}).get(key) != value:
                raise ConfigError(
                    f"{self.store_dir}: the checkpoint was made with {key}="
                    f"{pointer.get('extra', {}).get(key)!r}, this run has {value!r}; "
                    "use a fresh checkpoint_dir"
                )
        for name in files:
            source = storage.join(self.store_dir, pointer["folder"], name)
            storage.download_file(source, child_path(self.local_dir, name, "checkpoint file"))
        return pointer

    def push(self, done: bool = False) -> None:
        """Upload the working copy, then switch LATEST to it, then drop the previous copy."""
        previous = self.latest()
        folder = f"state-{self.epoch:04d}-{uuid.uuid4().hex[:8]}"
        files = sorted(p.name for p in self.local_dir.iterdir() if p.is_file())
        for name in files:
            storage.upload_file(self.local_dir / name, storage.join(self.store_dir, folder, name))
        pointer = {"epoch": self.epoch, "folder": folder, "files": files, "done": done}
        pointer["extra"] = self.extra
        storage.write_text(storage.join(self.store_dir, LATEST), json.dumps(pointer, indent=2))
        if previous and previous.get("folder") != folder:
            # Names from the store are checked before anything is deleted by them.
            for name in _checked_files(previous, storage.join(self.store_dir, LATEST)):
                storage.delete(storage.join(self.store_dir, previous["folder"], name))
        self._uploaded_epoch, self._last_upload = self.epoch, time.monotonic()
        log.info("checkpoint_saved", uri=self.store_dir, epoch=self.epoch, done=done)

    # --- local side ----------------------------------------------------------------------

    def _early_stopping(self) -> ResumableEarlyStopping | None:
        """The early-stopping callback among the resumables, whose best weights are saved."""
        found = (c for c in self.resumables.values() if isinstance(c, ResumableEarlyStopping))
        return next(found, None)

    def restore(self) -> Restored | None:
        """Load the store's latest checkpoint into the model and the callbacks (before fit).

        The model must be compiled: the optimizer's state is part of the weights file.
        """
        pointer = self.pull()
        if pointer is None:
            return None
        state = json.loads((self.local_dir / STATE_FILE).read_text())
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        if (self.local_dir / LEAN_FILE).exists():
            load_lean(self.model, self.local_dir / LEAN_FILE)
        else:
            self.model.load_weights(self.local_dir / WEIGHTS_FILE)
        for key in self.history:
            self.history[key][:] = state["history"].get(key, [])
        for name, callback in self.resumables.items():
            callback.restored = state["callbacks"].get(name, {})
        best = self.local_dir / BEST_WEIGHTS_FILE
        early = self._early_stopping()
        if early is not None and best.exists():
            with np.load(best) as saved:
                early.restored_best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]
        self.epoch = self._uploaded_epoch = int(pointer["epoch"])
        log.info("checkpoint_restored", uri=self.store_dir, epoch=self.epoch, done=pointer["done"])
        return Restored(self.epoch, bool(pointer["done"]), bool(state.get("stopped")))

    def write_local(self, stopped: bool) -> None:
        """Write the whole training state into the working folder."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        if self.lean:
            save_lean(self.model, self.local_dir / LEAN_FILE)
            (self.local_dir / WEIGHTS_FILE).unlink(missing_ok=True)
        else:
            self.model.save_weights(self.local_dir / WEIGHTS_FILE, overwrite=True)
            (self.local_dir / LEAN_FILE).unlink(missing_ok=True)
        best = self.local_dir / BEST_WEIGHTS_FILE
        early = self._early_stopping()
        if early is not None and early.best_weights is not None:
            tmp = best.with_suffix(".tmp.npz")
            np.savez(tmp, **{f"w{i}": w for i, w in enumerate(early.best_weights)})
            tmp.replace(best)
        else:
            best.unlink(missing_ok=True)
        state = {
            "epoch": self.epoch,
            "stopped": stopped,
            "callbacks": {name: c.state() for name, c in self.resumables.items()},
            "history": self.history,
        }
        (self.local_dir / STATE_FILE).write_text(json.dumps(state))

    def flush(self) -> None:
        """Upload the newest epoch-end state if the store does not have it yet (on SIGTERM)."""
        if self.epoch and self._uploaded_epoch != self.epoch and not self.flags.diverged:
            self.push()

    # --- Keras hooks -----------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        """Write the state; upload it unless an upload happened less than min_interval ago."""
        if self.flags.diverged:
            # Diverged weights must not become the state every retry resumes from.
            log.warning("checkpoint_skipped_diverged", uri=self.store_dir)
            return
        self.epoch = epoch + 1
        self.write_local(stopped=bool(self.model.stop_training))
        if time.monotonic() - self._last_upload >= self.min_interval:
            self.push()

    def on_train_end(self, logs=None):
        """Save the final weights and mark the phase done (not after SIGTERM or NaN)."""
        if self.flags.interrupted or self.flags.diverged:
            return
        # Final weights (after early stopping restored the best ones) mark the phase done.
        self.write_local(stopped=True)
        self.push(done=True)


def _checked_files(pointer: object, origin: str) -> list[str]:
    """The file names of a LATEST pointer read from the store, each a plain name (else an error)."""
    try:
        if not isinstance(pointer, dict) or not isinstance(pointer.get("files"), list):
            raise DataError("no list of files")
        check_file_name(pointer.get("folder"), "checkpoint folder")
        return [check_file_name(name, "checkpoint file") for name in pointer["files"]]
    except ValueError as error:
        raise DataError(f"{origin}: refusing the checkpoint pointer: {error}") from None


class Preemption:
    """A SIGTERM flag: set by the handler, acted on by `PreemptionGuard` between batches.

    The handler only sets the flag (or raises, outside training): it runs between two bytecodes
    of the main thread, which may be inside a log call holding the log's write lock (structlog's
    is not re-entrant), so logging there would wait on that lock forever. `noticed` logs the
    signal from ordinary code.
    """

    def __init__(self):
        self.requested = False
        self.in_fit = False
        self._previous = None
        self._logged = False

    def install(self) -> None:
        """Install the handler (main thread only; elsewhere this is a no-op)."""
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:
            self._previous = None

    def uninstall(self) -> None:
        """Restore the previous handler (and log a SIGTERM that nothing has logged yet)."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        self.noticed()

    def noticed(self) -> bool:
        """Whether SIGTERM was received; logs it once. Never call from the handler."""
        if self.requested and not self._logged:
            self._logged = True
            log.warning("sigterm_received", in_fit=self.in_fit)
        return self.requested

    def _handle(self, signum, frame):
        # No logging, no I/O, no locks here (see the class docstring).
        self.requested = True
        if not self.in_fit:
            raise TrainingInterrupted("SIGTERM received outside training; nothing to save")


class PreemptionGuard(keras.callbacks.Callback):
    """On SIGTERM: upload the newest epoch-end state after the running batch, then stop."""

    def __init__(self, preemption: Preemption, flags: RunFlags, backup: StoreCheckpoint | None):
        super().__init__()
        self.preemption = preemption
        self.flags = flags
        self.backup = backup

    def on_train_begin(self, logs=None):
        """From now on SIGTERM waits for the running batch."""
        self.preemption.in_fit = True

    def on_train_batch_end(self, batch, logs=None):
        """Act on a pending SIGTERM."""
        if not self.preemption.noticed():
            return
        self.flags.interrupted = True
        self.model.stop_training = True
        if self.backup is not None:
            self.backup.flush()
        raise TrainingInterrupted("SIGTERM: checkpoint saved, stopping for a retry")

    def on_test_batch_end(self, batch, logs=None):
        """Validation batches too: a long validation must not outlast the grace period."""
        self.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        """From now on SIGTERM stops at once."""
        self.preemption.in_fit = False
