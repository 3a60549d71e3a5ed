"""CLI: python -m components.data_prep --store STORE [--source SOURCE] ..."""

from __future__ import annotations

import sys

from components.common.cli import parser_for, run_main, write_summary
from components.common.config import from_args
from components.data_prep.config import PrepConfig


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = parser_for(
        "components.data_prep",
        "Turn an image-classification source into versioned TFRecord shards.",
        PrepConfig,
    )
    args = parser.parse_args(argv)

    def body() -> None:
        from components.data_prep import artifacts
        from components.data_prep.prep import run

        result = run(from_args(PrepConfig, args))
        write_summary(args.output_json, artifacts.summary(result))

    return run_main("data_prep", args, body)


if __name__ == "__main__":
    sys.exit(main())
