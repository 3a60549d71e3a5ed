"""CLI: python -m components.training {cnn,transfer} --dataset-uri URI --output-dir DIR ..."""

from __future__ import annotations

import argparse
import sys

from components.common.backbones import DEFAULT_BACKBONE
from components.common.cli import (
    add_step_arguments,
    exit_without_teardown,
    run_main,
    write_summary,
)
from components.common.config import ConfigError, from_args
from components.common.logging import get_logger
from components.common.result import Role
from components.training.config import TrainConfig
from components.training.models import SEED_CNN

STEPS = {Role.CNN: SEED_CNN, Role.TRANSFER: DEFAULT_BACKBONE}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line: the step, then one option per TrainConfig field."""
    parser = argparse.ArgumentParser(
        prog="python -m components.training",
        description="Train the CNN from scratch (cnn) or the backbone transfer model (transfer).",
    )
    steps = parser.add_subparsers(dest="step", required=True)
    for role, model in STEPS.items():
        sub = steps.add_parser(str(role), help=f"train {model} (--model overrides)")
        required = ("dataset_uri", "output_dir")
        add_step_arguments(sub, TrainConfig, required=required, overrides={"model": model})
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, exit_when_preempted: bool = False) -> int:
    """Entry point; exits 143 after a SIGTERM checkpoint so that the orchestrator retries.

    With `exit_when_preempted` (the program itself) the process ends there and then, without
    the interpreter's teardown: the state is in the store, nothing is published, and
    TensorFlow's teardown can take longer than the save itself (docs/RELIABILITY.md).
    """
    args = parse_args(argv)
    name = f"train_{args.step}"
    interrupted: list[str] = []

    def body() -> None:
        from components.training.callbacks import TrainingDivergedError  # TensorFlow loads here
        from components.training.checkpoint import TrainingInterrupted
        from components.training.train import run

        try:
            result = run(from_args(TrainConfig, args))
        except TrainingInterrupted as error:
            interrupted.append(str(error))
            return
        except TrainingDivergedError as error:
            # A known outcome of the recipe's parameters (the message says which to lower).
            raise ConfigError(str(error)) from error
        summary = {
            "output_dir": result.output_dir,
            "model": result.model,
            "test_accuracy": result.test_accuracy,
            "epochs_run": result.epochs_run,
            "resumed": result.resumed,
        }
        write_summary(args.output_json, summary)

    code = run_main(name, args, body)
    if not interrupted:
        return code
    from components.training.checkpoint import EXIT_PREEMPTED

    get_logger(name).warning("interrupted", reason=interrupted[0])
    print(f"interrupted: {interrupted[0]}", file=sys.stderr)
    if exit_when_preempted:
        exit_without_teardown(EXIT_PREEMPTED)
    return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main(exit_when_preempted=True))
