"""CLI: python -m components.training {cnn,transfer} --dataset URI --output-dir DIR ..."""

from __future__ import annotations

import argparse
import sys

from components.common.cli import add_common_arguments, run_main, write_summary
from components.common.logging import get_logger
from components.training.checkpoint import EXIT_PREEMPTED, TrainingInterrupted
from components.training.config import OPTIMIZERS, TrainConfig

STEPS = {"cnn": "seed_cnn", "transfer": "inception_v3"}


def optional_int(text: str) -> int | None:
    """An int, or None for 'none'/'default'."""
    return None if text.lower() in ("none", "default", "") else int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    defaults = TrainConfig(dataset_uri="-")
    parser = argparse.ArgumentParser(
        prog="python -m components.training",
        description="Train the CNN from scratch (cnn) or the backbone transfer model (transfer).",
    )
    parser.add_argument("step", choices=sorted(STEPS), help="cnn: seed_cnn; transfer: backbone")
    parser.add_argument("--dataset", required=True, help="dataset folder with manifest.json")
    parser.add_argument("--output-dir", required=True, help="local folder for the outputs")
    parser.add_argument("--model", default=None, help="override the step's model name")
    parser.add_argument("--weights", default=None, help="backbone weights file (URI or path)")
    parser.add_argument("--input-size", type=optional_int, default=None)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--augmentation", type=float, default=defaults.augmentation)
    parser.add_argument("--cut-layer", default=defaults.cut_layer)
    parser.add_argument("--fine-tune-from", default=None)
    parser.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs)
    parser.add_argument(
        "--fine-tune-learning-rate", type=float, default=defaults.fine_tune_learning_rate
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--checkpoint-dir", default=None, help="store URI or folder for resume")
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=defaults.checkpoint_interval,
        help="seconds between checkpoint uploads (0: every epoch; SIGTERM uploads the newest)",
    )
    parser.add_argument("--cache-dir", default=None, help="local scratch (default: a temp dir)")
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--lr-decay-patience", type=int, default=defaults.lr_decay_patience)
    parser.add_argument("--target-accuracy", type=float, default=None)
    parser.add_argument("--no-feature-cache", action="store_true")
    parser.add_argument("--feature-dtype", default=defaults.feature_dtype)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument(
        "--cache-ram-mb",
        type=int,
        default=defaults.cache_ram_mb,
        help="MiB of decoded images cached in RAM; larger splits use a file cache or none",
    )
    parser.add_argument("--output-json", default=None, help="also write the key results here")
    add_common_arguments(parser)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the arguments describe."""
    return TrainConfig(
        dataset_uri=args.dataset,
        output_dir=args.output_dir,
        model=args.model or STEPS[args.step],
        weights=args.weights,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        augmentation=args.augmentation,
        cut_layer=args.cut_layer,
        fine_tune_from=args.fine_tune_from,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_interval=args.checkpoint_interval,
        cache_dir=args.cache_dir,
        patience=args.patience,
        lr_decay_patience=args.lr_decay_patience,
        target_accuracy=args.target_accuracy,
        feature_cache=not args.no_feature_cache,
        feature_dtype=args.feature_dtype,
        num_classes=args.num_classes,
        cache_ram_mb=args.cache_ram_mb,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; exits 143 after a SIGTERM checkpoint so that the orchestrator retries."""
    args = parse_args(argv)

    def body() -> None:
        from components.training.train import run  # TensorFlow loads here, not at --help

        result = run(config_from_args(args))
        summary = {
            "output_dir": result.output_dir,
            "model": result.model,
            "test_accuracy": result.test_accuracy,
            "epochs_run": result.epochs_run,
            "resumed": result.resumed,
        }
        write_summary(args.output_json, summary)

    try:
        return run_main(f"train_{args.step}", args, body)
    except TrainingInterrupted as error:
        get_logger(f"train_{args.step}").warning("interrupted", reason=str(error))
        print(f"interrupted: {error}", file=sys.stderr)
        return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
