"""What every step's CLI shares: logging set-up and clear, non-zero exits on known failures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from components.common import storage
from components.common.dataset import DataError
from components.common.http import DownloadError
from components.common.logging import configure, get_logger
from components.common.redact import redact_text, redact_value
from components.common.storage import StorageError

# Failures whose message is the whole story: no traceback, exit status 1.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    DownloadError,
    StorageError,
    ValueError,
    FileNotFoundError,
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-level and --log-format, for every step."""
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="auto: JSON lines unless stdout is a terminal",
    )


def run_main(name: str, args: argparse.Namespace, body: Callable[[], object]) -> int:
    """Set up logging, run `body`, and turn expected failures into a message and exit code 1."""
    configure(args.log_level, json=None if args.log_format == "auto" else args.log_format == "json")
    try:
        body()
    except EXPECTED_ERRORS as error:
        message = redact_text(str(error))
        get_logger(name).error("failed", error=message, error_type=type(error).__name__)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def write_summary(path: str | None, summary: dict) -> None:
    """Write a step's result summary as JSON (atomically) when --output-json names a file.

    URLs in it lose userinfo and query strings (`redact_value`).
    """
    if path:
        text = json.dumps(redact_value(summary), indent=2, default=str)
        storage.write_text(path, text + "\n")


def size_pair(text: str) -> tuple[int, int]:
    """Parse `HxW` (or a single `N` for a square) into (height, width)."""
    height, _, width = text.lower().partition("x")
    try:
        return int(height), int(width or height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}") from None
