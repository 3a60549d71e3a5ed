"""CLI: python -m components.weights --store STORE [--weights-url URL|default|none] ..."""

from __future__ import annotations

import dataclasses
import sys

from components.common.cli import parser_for, run_main, write_summary
from components.common.config import from_args
from components.common.http import RetryPolicy
from components.weights.config import WeightsConfig


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = parser_for(
        "components.weights",
        "Download, verify and cache pretrained backbone weights by content hash.",
        WeightsConfig,
    )
    parser.add_argument(
        "--attempts", type=int, default=RetryPolicy().attempts, help="download attempts"
    )
    parser.add_argument(
        "--max-download-bytes",
        type=int,
        default=RetryPolicy().max_bytes,
        help="largest file accepted from a URL (bytes)",
    )
    parser.add_argument(
        "--redirect-host",
        action="append",
        default=[],
        help="host an https redirect may lead to besides the URL's own (repeatable)",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        from components.weights.fetch import run

        retry = dataclasses.replace(
            RetryPolicy(),
            attempts=args.attempts,
            max_bytes=args.max_download_bytes,
            redirect_hosts=tuple(args.redirect_host),
        )
        result = run(from_args(WeightsConfig, args, retry=retry))
        write_summary(args.output_json, result.to_dict())

    return run_main("weights", args, body)


if __name__ == "__main__":
    sys.exit(main())
