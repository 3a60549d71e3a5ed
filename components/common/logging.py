"""One structlog setup for every step.

JSON lines when stdout is not a TTY (containers, KFP), readable console output on a TTY.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import structlog

from components.common.redact import redact_text, redact_value

# TensorFlow's C++ start-up lines (oneDNN, cpu_feature_guard, absl): read once, when TensorFlow
# is first imported, so they are set before any step imports it.
NATIVE_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}
NATIVE_VERBOSE = {"TF_CPP_MIN_LOG_LEVEL": "0"}


def quiet_native_logs(level: str = "INFO") -> None:
    """Silence TensorFlow's C++ logs unless `level` is DEBUG (a value set by the user wins)."""
    for name, value in (NATIVE_VERBOSE if level.upper() == "DEBUG" else NATIVE_QUIET).items():
        os.environ.setdefault(name, value)


def redact_event(logger: Any, method: str, event_dict: dict) -> dict:
    """Structlog processor: URLs in every logged value lose userinfo and query (`redact_value`)."""
    return redact_value(event_dict)


class RedactFilter(logging.Filter):
    """Standard-library records (urllib3's request lines at DEBUG, ...) with URLs redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the message by its redacted text; keep every record."""
        record.msg, record.args = redact_text(record.getMessage()), ()
        return True


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog (and the standard library root logger) once per process."""
    quiet_native_logs(level)
    if json is None:
        json = not sys.stdout.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    numeric_level = logging.getLevelName(level.upper())
    logging.basicConfig(level=numeric_level, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # No fixed file: each logger writes to the sys.stdout of the moment.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a logger bound to a component name."""
    return structlog.get_logger(component=name)


class StepFigures(dict):
    """Key figures a step adds while it runs; logged with the step's end event."""


@contextlib.contextmanager
def step(log: Any, name: str, **start_fields: Any) -> Iterator[StepFigures]:
    """Log `step_start` and `step_end` (or `step_failed`) with duration and key figures.

    Usage::

        with step(log, "data_prep", source=uri) as figures:
            ...
            figures["images"] = 70000
    """
    figures = StepFigures()
    log.info("step_start", step=name, **start_fields)
    started = time.perf_counter()
    try:
        yield figures
    except BaseException as error:
        log.error(
            "step_failed",
            step=name,
            duration_s=round(time.perf_counter() - started, 3),
            error=f"{type(error).__name__}: {error}",
            **figures,
        )
        raise
    log.info("step_end", step=name, duration_s=round(time.perf_counter() - started, 3), **figures)
