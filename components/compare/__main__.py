"""CLI: python -m components.compare --run-dirs D,D,... --output-dir D --store S ..."""

from __future__ import annotations

import sys

from components.common.cli import parser_for, run_main, write_summary
from components.common.config import from_args
from components.compare.config import CompareConfig


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = parser_for(
        "components.compare",
        "Compare the training runs (arms), write the report, gate the champion.",
        CompareConfig,
        required=("output_dir",),
    )
    args = parser.parse_args(argv)

    def body() -> None:
        from components.compare.compare import run

        result = run(from_args(CompareConfig, args))
        summary = {
            "winner": result.winner,
            "report_html": result.report_html,
            "summary_md": result.summary_md,
            "metrics": result.metrics,
            "champion": result.champion,
        }
        write_summary(args.output_json, summary)

    return run_main("compare", args, body)


if __name__ == "__main__":
    sys.exit(main())
