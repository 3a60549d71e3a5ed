"""What every step's CLI shares: options from the config, logging, clear exits on bad input.

Known failures (bad parameters, bad data, unreachable downloads, store errors) print one line
and exit 1. Anything else is a bug: it keeps its traceback and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from components.common import storage
from components.common.config import ConfigError, add_arguments
from components.common.dataset import DataError
from components.common.http import DownloadError
from components.common.logging import configure, get_logger
from components.common.redact import redact_text, redact_value
from components.common.storage import StorageError

# Failures whose message is the whole story: no traceback, exit status 1.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    DownloadError,
    StorageError,
    FileNotFoundError,
)


def exit_without_teardown(code: int) -> NoReturn:
    """End the process with `code` once the logs are flushed, skipping the interpreter's teardown.

    TensorFlow's teardown can take longer than a SIGTERM save itself, or crash after every
    output was written (docs/RELIABILITY.md, "SIGTERM to exit").
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def parser_for(
    prog: str, description: str, config: type, *, required: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """A parser with one option per config field, plus --output-json and the logging options."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    add_step_arguments(parser, config, required=required)
    return parser


def add_step_arguments(
    parser: argparse.ArgumentParser,
    config: type,
    *,
    required: tuple[str, ...] = (),
    overrides: dict | None = None,
) -> None:
    """One option per config field (see `add_arguments`), --output-json, logging options."""
    add_arguments(parser, config, required=required, overrides=overrides)
    parser.add_argument("--output-json", default="", help="also write the key results here")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="auto: JSON lines unless stdout is a terminal",
    )


def run_main(name: str, args: argparse.Namespace, body: Callable[[], object]) -> int:
    """Set up logging (TensorFlow's C++ logs off unless DEBUG), run `body`, map known failures.

    `body` imports the step's heavy modules itself, after the logging set-up.
    """
    configure(args.log_level, json=None if args.log_format == "auto" else args.log_format == "json")
    try:
        body()
    except EXPECTED_ERRORS as error:
        message = redact_text(str(error))
        get_logger(name).error("failed", error=message, error_type=type(error).__name__)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def write_summary(path: str, summary: dict) -> None:
    """Write a step's result summary as JSON (atomically) when --output-json names a file.

    URLs in it lose userinfo and query strings (`redact_value`).
    """
    if path:
        text = json.dumps(redact_value(summary), indent=2, default=str)
        storage.write_text(path, text + "\n")
