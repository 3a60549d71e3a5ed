"""CLI: python -m components.compare --cnn-dir D --transfer-dir D --output-dir D --store S ..."""

from __future__ import annotations

import argparse
import sys

from components.common.cli import add_common_arguments, run_main, write_summary
from components.compare.compare import CompareConfig, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    defaults = CompareConfig(cnn_dir="-", transfer_dir="-")
    parser = argparse.ArgumentParser(
        prog="python -m components.compare",
        description="Compare the CNN and transfer runs, write the report, gate the champion.",
    )
    parser.add_argument("--cnn-dir", required=True, help="folder with the CNN run's outputs")
    parser.add_argument("--transfer-dir", required=True, help="folder with the transfer outputs")
    parser.add_argument("--output-dir", required=True, help="local folder for the report files")
    parser.add_argument("--store", default=defaults.store, help="gs://bucket/prefix or a folder")
    parser.add_argument("--dataset", default=defaults.dataset, help="dataset name")
    parser.add_argument(
        "--margin",
        type=float,
        default=defaults.margin,
        help="test accuracy the winner must gain over the champion (0.005 = half a point)",
    )
    parser.add_argument(
        "--promote-on-new-split",
        action="store_true",
        help="promote even when the champion was measured on another test split",
    )
    parser.add_argument("--cnn-model-uri", default=None, help="model pointer for the champion")
    parser.add_argument("--transfer-model-uri", default=None, help="model pointer for the champion")
    parser.add_argument("--run-id", default=None, help="pipeline run id for the champion record")
    parser.add_argument("--output-json", default=None, help="also write the result here")
    add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)

    def body() -> None:
        config = CompareConfig(
            cnn_dir=args.cnn_dir,
            transfer_dir=args.transfer_dir,
            output_dir=args.output_dir,
            store=args.store,
            dataset=args.dataset,
            margin=args.margin,
            promote_on_new_split=args.promote_on_new_split,
            cnn_model_uri=args.cnn_model_uri,
            transfer_model_uri=args.transfer_model_uri,
            run_id=args.run_id,
        )
        result = run(config)
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
