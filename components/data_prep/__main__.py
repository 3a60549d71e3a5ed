"""CLI: python -m components.data_prep --store STORE [--source SOURCE] ..."""

from __future__ import annotations

import argparse
import sys

from components.common.cli import add_common_arguments, run_main, write_summary
from components.data_prep.encoding import SHARD_ENCODINGS
from components.data_prep.photos import DEFAULT_SIZE, parse_image_size
from components.data_prep.prep import PrepConfig, run


def image_size_arg(text: str) -> tuple[int, int] | None:
    """The --image-size type: auto, HxW or N."""
    try:
        return parse_image_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    defaults = PrepConfig()
    parser = argparse.ArgumentParser(
        prog="python -m components.data_prep",
        description="Turn an image-classification source into versioned TFRecord shards.",
    )
    parser.add_argument("--store", default=defaults.store, help="gs://bucket/prefix or a folder")
    parser.add_argument(
        "--source",
        default=defaults.source,
        help="IDX folder, base URL or gs:// prefix; image-folder tree; .tar.gz/.zip archive; "
        "auto: the Debian Fashion-MNIST files if installed, else the official URL",
    )
    parser.add_argument("--name", default=defaults.name, help="dataset name")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split")
    parser.add_argument("--records-per-shard", type=int, default=defaults.records_per_shard)
    parser.add_argument(
        "--class-names", default=None, help="comma-separated class names for IDX sources"
    )
    parser.add_argument(
        "--image-size",
        type=image_size_arg,
        default=None,
        help="auto (default): uniform sizes kept, mixed sizes centre-cropped to "
        f"{DEFAULT_SIZE}x{DEFAULT_SIZE}; HxW or N: every image resized (aspect kept) and "
        "centre-cropped to it",
    )
    parser.add_argument(
        "--shard-encoding",
        choices=SHARD_ENCODINGS,
        default=defaults.shard_encoding,
        help="how shards store images; auto: raw up to 64x64 pixels, else JPEG",
    )
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--output-json", default=None, help="also write the result here")
    add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)

    def body() -> None:
        config = PrepConfig(
            store=args.store,
            source=args.source,
            name=args.name,
            val_fraction=args.val_fraction,
            seed=args.seed,
            limit=args.limit,
            records_per_shard=args.records_per_shard,
            class_names=tuple(args.class_names.split(",")) if args.class_names else None,
            image_size=args.image_size,
            shard_encoding=args.shard_encoding,
            max_image_pixels=args.max_image_pixels,
            work_dir=args.work_dir,
        )
        result = run(config)
        summary = {
            "uri": result.uri,
            "version": result.manifest.version,
            "cache_hit": result.cache_hit,
            "splits": {name: split.count for name, split in result.manifest.splits.items()},
        }
        write_summary(args.output_json, summary)

    return run_main("data_prep", args, body)


if __name__ == "__main__":
    sys.exit(main())
