"""Training callbacks: per-epoch history and logging, target accuracy, NaN guard."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from components.common.logging import get_logger
from components.common.numbers import finite_or_none

log = get_logger("training")

HISTORY_KEYS = ("accuracy", "val_accuracy", "loss", "val_loss")


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite."""


def empty_history() -> dict[str, list]:
    """The history.json layout with no epochs yet."""
    return {
        key: [] for key in ("epoch", "phase", *HISTORY_KEYS, "epoch_seconds", "images_per_second")
    }


class EpochRecorder(keras.callbacks.Callback):
    """Record each epoch's metrics, training seconds and images/s into a shared history dict.

    Training time is measured from the epoch's start to the start of validation, so images/s
    counts training throughput only.
    """

    def __init__(self, history: dict, phase: str, images_per_epoch: int, epoch_offset: int = 0):
        super().__init__()
        self.history = history
        self.phase = phase
        self.images_per_epoch = images_per_epoch
        self.epoch_offset = epoch_offset  # epochs of earlier phases, for global numbering
        self._started = 0.0
        self._train_seconds: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        """Start the epoch clock."""
        self._started = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        """Validation starts: the training part of the epoch is over."""
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._started

    def on_epoch_end(self, epoch, logs=None):
        """Act on the finished epoch's logs."""
        logs = logs or {}
        seconds = self._train_seconds or (time.perf_counter() - self._started)
        record = {
            "epoch": self.epoch_offset + epoch + 1,
            "phase": self.phase,
            **{key: finite_or_none(logs.get(key)) for key in HISTORY_KEYS},
            "epoch_seconds": round(seconds, 4),
            "images_per_second": round(self.images_per_epoch / max(seconds, 1e-9), 2),
        }
        for key, value in record.items():
            self.history[key].append(value)
        log.info("epoch_end", **record)


class StopAtAccuracy(keras.callbacks.Callback):
    """Stop once the monitored accuracy reaches a target.

    The reference recipe read `logs["acc"]`, which Keras no longer writes; this reads
    `accuracy` (or the given key) and falls back to `acc`.
    """

    def __init__(self, target: float, monitor: str = "accuracy"):
        super().__init__()
        self.target = target
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        """Act on the finished epoch's logs."""
        logs = logs or {}
        value = logs.get(self.monitor, logs.get("acc"))
        if value is not None and value >= self.target:
            log.info("target_accuracy_reached", epoch=epoch + 1, value=float(value))
            self.model.stop_training = True


class EpochSeeds(keras.callbacks.Callback):
    """Reseed every random layer (dropout, augmentation) at each epoch's start.

    Keras keeps a layer's random-generator state in a variable that weights files do not restore,
    so a resumed run would draw other dropout masks. Seeding each epoch from (run seed, epoch,
    layer index) makes them a function of the epoch alone, the same with or without a resume.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        """Set each generator's state from the run's seed and the epoch number."""
        states = [
            v for v in self.model.non_trainable_variables if v.path.endswith("seed_generator_state")
        ]
        for index, state in enumerate(states):
            derived = (self.seed * 1_000_003 + epoch * 7_919 + index) % (2**31 - 1)
            state.assign(np.array([derived, 0], dtype=state.dtype))


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers where the loss went bad, so training can fail clearly.

    `flags` (a checkpoint.RunFlags) is shared with the checkpoint callback, which then marks no
    phase done and saves no checkpoint of the diverged weights.
    """

    def __init__(self, flags):
        super().__init__()
        self.flags = flags
        self.bad_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        """Remember the epoch number."""
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        """Check the batch loss."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_at = (self._epoch + 1, batch)
            self.model.stop_training = True
            self.flags.diverged = True

    def check(self, learning_rate: float) -> None:
        """Raise if the loss went NaN/inf during the last fit."""
        if self.bad_at is not None:
            epoch, batch = self.bad_at
            raise TrainingDivergedError(
                f"training diverged: the loss became NaN or infinite at epoch {epoch}, "
                f"batch {batch} (learning rate {learning_rate}); lower the learning rate"
            )
