"""CLI: python -m components.data_prep --store STORE [--source SOURCE] ..."""

from __future__ import annotations

import argparse
import sys

from components.common.cli import add_common_arguments, run_main, size_pair, write_summary
from components.data_prep.prep import PrepConfig, run


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
        "auto: the Debian Fashion-MNIST files if installed, else the official URL. Never put "
        "credentials in it (user:password@, signed query strings): see docs/SECURITY.md",
    )
    parser.add_argument(
        "--name", default=defaults.name, help="dataset name: [a-z0-9][a-z0-9_.-]{0,62}, no '..'"
    )
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split")
    parser.add_argument("--records-per-shard", type=int, default=defaults.records_per_shard)
    parser.add_argument(
        "--class-names", default=None, help="comma-separated class names for IDX sources"
    )
    parser.add_argument(
        "--image-size", type=size_pair, default=None, help="resize image folders to HxW"
    )
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument(
        "--max-download-bytes",
        type=int,
        default=defaults.max_download_bytes,
        help="largest file accepted from a URL",
    )
    parser.add_argument(
        "--redirect-host",
        action="append",
        default=[],
        help="host an https redirect may lead to besides the URL's own (repeatable)",
    )
    parser.add_argument(
        "--local-root",
        action="append",
        default=None,
        help="folder a local source may lie in (repeatable; default: $TL_LOCAL_SOURCE_ROOTS, "
        "else the working folder, /usr/share/datasets, Keras' cache and the temp folder)",
    )
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
            max_image_pixels=args.max_image_pixels,
            max_download_bytes=args.max_download_bytes,
            redirect_hosts=tuple(args.redirect_host),
            local_roots=tuple(args.local_root) if args.local_root else None,
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
