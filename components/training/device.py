"""Accelerator set-up: distribution strategy, mixed precision, XLA, and seeding."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from components.common.logging import get_logger

log = get_logger("training")


@dataclass(frozen=True)
class Runtime:
    """What this process trains on."""

    strategy: Any  # tf.distribute.Strategy
    gpus: int
    mixed_precision: bool
    jit_compile: bool | str  # "auto": XLA wherever every layer supports it


def seed_everything(seed: int) -> None:
    """One seed for Python's, NumPy's and TensorFlow's random sources."""
    import keras

    keras.utils.set_random_seed(seed)


def setup() -> Runtime:
    """GPU: mixed_float16 and XLA, MirroredStrategy with more than one GPU. CPU: all off."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    # "auto" compiles with XLA unless a layer (some augmentation ops) cannot be compiled.
    runtime = Runtime(strategy, len(gpus), bool(gpus), jit_compile="auto" if gpus else False)
    log.info(
        "accelerator",
        device="gpu" if gpus else "cpu",
        gpus=len(gpus),
        strategy=type(strategy).__name__,
        mixed_precision=runtime.mixed_precision,
        xla=runtime.jit_compile,
        replicas=strategy.num_replicas_in_sync,
    )
    return runtime
