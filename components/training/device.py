"""Accelerator set-up: distribution strategy, mixed precision, XLA, the allocator, and seeding."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
ALLOCATOR_ENV = "TRAINING_DEFAULT_MALLOC"  # 1: leave glibc's allocator as it is


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    TensorFlow on CPU allocates every step's activations with malloc. glibc serves blocks of
    32 MiB and more (a 56 px batch of 128 has several) with a fresh mmap and unmaps them when
    freed, so each step faults its activations in again page by page: measured on a 2-core VM,
    3 million page faults per 100 steps at 56 px and a quarter of the CPU time in the kernel.
    Without mmap, with the heap kept up to 1 GiB above need, the faults stop after the first
    steps, for about 0.2 GiB more peak RSS; the speed gained depends on the machine's load
    (docs/steps.md, "Memory"). Process-wide, for the allocations that follow; a no-op where the
    C library is not glibc. Returns whether the settings were applied.
    """
    if os.environ.get(ALLOCATOR_ENV) == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20))
    return all(mallopt(option, value) == 1 for option, value in settings)


def setup(keep_memory: bool = True) -> Runtime:
    """GPU: mixed_float16 and XLA, MirroredStrategy with more than one GPU. CPU: all off.

    With `keep_memory`, also makes glibc keep freed memory (`keep_freed_memory`), before the
    first step allocates.
    """
    import keras
    import tensorflow as tf

    kept = keep_memory and keep_freed_memory()

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
        keep_freed_memory=kept,
    )
    return runtime
