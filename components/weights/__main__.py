"""CLI: python -m components.weights --store STORE [--url URL|default|none] [--sha256 H] ..."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from components.common.cli import add_common_arguments, run_main, write_summary
from components.common.http import RetryPolicy
from components.weights.backbones import BACKBONES
from components.weights.fetch import WeightsConfig, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    defaults = WeightsConfig()
    parser = argparse.ArgumentParser(
        prog="python -m components.weights",
        description="Download, verify and cache pretrained backbone weights by content hash.",
    )
    parser.add_argument("--store", default=defaults.store, help="gs://bucket/prefix or a folder")
    parser.add_argument(
        "--url",
        default=defaults.url,
        help="http(s):// URL, gs:// URI or local path of the weights; 'default': the backbone's "
        "published file; 'none': no pretrained weights (train from scratch). Never put "
        "credentials in it (user:password@, signed query strings): see docs/SECURITY.md",
    )
    parser.add_argument("--sha256", default=None, help="pinned sha256 of the file")
    parser.add_argument("--md5", default=None, help="pinned md5 (publishers giving only md5)")
    parser.add_argument("--backbone", default=defaults.backbone, choices=sorted(BACKBONES))
    parser.add_argument("--filename", default=None, help="file name in the store")
    parser.add_argument(
        "--keras-cache-dir", default=None, help="Keras' cache (default: ~/.keras/models)"
    )
    parser.add_argument("--no-keras-cache", action="store_true", help="do not look in Keras' cache")
    parser.add_argument(
        "--attempts", type=int, default=defaults.retry.attempts, help="download attempts"
    )
    parser.add_argument(
        "--max-download-bytes",
        type=int,
        default=defaults.retry.max_bytes,
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
        help="folder a local --url may lie in (repeatable; default: $TL_LOCAL_SOURCE_ROOTS, "
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
        config = WeightsConfig(
            store=args.store,
            url=args.url,
            sha256=args.sha256,
            md5=args.md5,
            backbone=args.backbone,
            filename=args.filename,
            keras_cache_dir=args.keras_cache_dir,
            use_keras_cache=not args.no_keras_cache,
            work_dir=args.work_dir,
            retry=dataclasses.replace(
                RetryPolicy(),
                attempts=args.attempts,
                max_bytes=args.max_download_bytes,
                redirect_hosts=tuple(args.redirect_host),
            ),
            local_roots=tuple(args.local_root) if args.local_root else None,
        )
        result = run(config)
        write_summary(args.output_json, result.to_dict())

    return run_main("weights", args, body)


if __name__ == "__main__":
    sys.exit(main())
