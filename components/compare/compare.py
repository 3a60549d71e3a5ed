"""The compare step: read both training runs, plot, gate the champion, write the report."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common import checkpoints, storage
from components.common.logging import get_logger, step
from components.compare import champion, plots, report
from components.compare.inputs import RunOutputs, check_comparable, load_run

log = get_logger("compare")

ROLES = ("cnn", "transfer")
# Per-model numbers in the flat metrics file: <role>_<name>.
MODEL_METRICS = (
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "images_per_second",
    "params_total",
    "params_trainable",
)


@dataclass(frozen=True)
class CompareConfig:
    """Compare settings."""

    cnn_dir: str = ""  # local folder with the CNN run's metrics.json, history.json, ...
    transfer_dir: str = ""  # local folder with the transfer run's outputs
    output_dir: str = "compare"  # local folder for report.html, summary.md, *.png, *.json
    store: str = (
        "store"  # gs://bucket/prefix or a folder; champion at <store>/champion/<dataset>.json
    )
    dataset: str = "fashion_mnist"  # dataset name (names the champion file)
    margin: float = 0.005  # absolute test accuracy the winner must gain over the champion
    promote_on_new_split: bool = False  # promote over a champion measured on another test split
    cnn_model_uri: str | None = None  # pointer recorded in the champion file; None: cnn_dir
    transfer_model_uri: str | None = None  # same for the transfer model; None: transfer_dir
    run_id: str | None = None  # pipeline run id, recorded in the champion file

    def __post_init__(self) -> None:
        """Validate at start-up."""
        if not self.cnn_dir or not self.transfer_dir:
            raise ValueError("cnn_dir and transfer_dir are required")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if not self.dataset or "/" in self.dataset or self.dataset.startswith("."):
            raise ValueError(f"dataset must be a plain name, got {self.dataset!r}")


@dataclass(frozen=True)
class CompareResult:
    """The winner, where the report is, the flat metrics and the champion decision."""

    winner: str | None  # "cnn", "transfer", or None when an accuracy is missing
    report_html: str
    summary_md: str
    metrics: dict[str, float]
    champion: dict[str, Any]
    comparison: dict[str, Any] = field(repr=False, default_factory=dict)


def pick_winner(cnn: RunOutputs, transfer: RunOutputs) -> str | None:
    """The winner's role: the higher test accuracy, or None when either is missing.

    An exact tie goes to the model with fewer parameters (the CNN when those tie too).
    """
    if cnn.accuracy is None or transfer.accuracy is None:
        return None
    if cnn.accuracy != transfer.accuracy:
        return "transfer" if transfer.accuracy > cnn.accuracy else "cnn"
    params = [r.numbers["params_total"] or float("inf") for r in (cnn, transfer)]
    return "transfer" if params[1] < params[0] else "cnn"


def flat_metrics(runs: dict[str, RunOutputs], winner: str | None, promoted: bool) -> dict:
    """Stable names -> numbers for the KFP Metrics artifact; missing numbers are left out."""
    metrics: dict[str, float] = {}
    for role, run in runs.items():
        for name in MODEL_METRICS:
            if run.numbers[name] is not None:
                metrics[f"{role}_{name}"] = run.numbers[name]
    if runs["cnn"].accuracy is not None and runs["transfer"].accuracy is not None:
        metrics["accuracy_difference"] = runs["transfer"].accuracy - runs["cnn"].accuracy
    if winner is not None:
        metrics["winner_is_transfer"] = 1.0 if winner == "transfer" else 0.0
    metrics["transfer_pretrained"] = 1.0 if runs["transfer"].pretrained else 0.0
    metrics["champion_promoted"] = 1.0 if promoted else 0.0
    return metrics


def candidate_record(config: CompareConfig, run: RunOutputs | None) -> dict[str, Any]:
    """The champion record the winner would get (empty accuracy when there is no winner)."""
    if run is None:
        return {"model": None, "test_accuracy": None, "dataset": config.dataset}
    pointer = config.cnn_model_uri if run.role == "cnn" else config.transfer_model_uri
    return {
        "model": run.model,
        "display_name": run.display_name,
        "role": run.role,
        "test_accuracy": run.accuracy,
        "test_loss": run.numbers["test_loss"],
        "train_seconds": run.numbers["train_seconds"],
        "pretrained": run.pretrained,
        "weights_sha256": run.raw.get("weights_sha256"),
        "dataset": config.dataset,
        "dataset_version": run.raw.get("dataset_version"),
        "dataset_uri": run.raw.get("dataset_uri"),
        "test_split_sha256": run.raw.get("test_split_sha256"),
        "model_uri": pointer or run.folder,
        "run_id": config.run_id,
    }


def _model_summary(run: RunOutputs) -> dict[str, Any]:
    per_class = run.per_class_accuracy()
    return {
        "model": run.model,
        "display_name": run.display_name,
        "pretrained": run.pretrained,
        "weights_sha256": run.raw.get("weights_sha256"),
        "folder": run.folder,
        **run.numbers,
        "per_class_accuracy": None
        if per_class is None
        else {
            name: (None if value != value else float(value))
            for name, value in zip(run.class_names, per_class, strict=True)
        },
        "history_epochs": len(run.history.epoch),
    }


def run(config: CompareConfig) -> CompareResult:
    """Compare the two runs, gate the champion, and write the report files to output_dir."""
    with step(log, "compare", cnn_dir=config.cnn_dir, transfer_dir=config.transfer_dir) as figs:
        runs = {
            "cnn": load_run(config.cnn_dir, "cnn"),
            "transfer": load_run(config.transfer_dir, "transfer"),
        }
        cnn, transfer = runs["cnn"], runs["transfer"]
        check_comparable(cnn, transfer)
        winner = pick_winner(cnn, transfer)
        figures = plots.all_figures(cnn, transfer)

        decision = champion.gate(
            champion.champion_uri(config.store, config.dataset),
            candidate_record(config, runs.get(winner) if winner else None),
            config.margin,
            promote_on_new_split=config.promote_on_new_split,
        )
        notes = [*cnn.notes, *transfer.notes]
        if len(cnn.history.epoch) != len(transfer.history.epoch):
            notes.append(
                f"the histories differ in length ({len(cnn.history.epoch)} vs "
                f"{len(transfer.history.epoch)} epochs); each is plotted as it is"
            )
        if not transfer.pretrained:
            notes.append("transfer: the backbone started from random weights, not pretrained ones")
        metrics = flat_metrics(runs, winner, decision.promoted)
        source = transfer if transfer.raw.get("test_split_sha256") else cnn
        comparison = {
            "format_version": 1,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "dataset": {
                "name": config.dataset,
                "version": source.raw.get("dataset_version"),
                "uri": source.raw.get("dataset_uri"),
                "test_split_sha256": source.raw.get("test_split_sha256"),
            },
            "class_names": list(cnn.class_names),
            "winner": winner,
            "winner_model": runs[winner].model if winner else None,
            "winner_display_name": runs[winner].display_name if winner else None,
            "headline": report.headline(cnn, transfer, winner),
            "models": {role: _model_summary(run) for role, run in runs.items()},
            "metrics": metrics,
            "champion": {**decision.to_dict(), "margin": config.margin},
            "notes": notes,
            "figures": list(figures),
        }
        out = Path(config.output_dir)
        for name, (_, png) in figures.items():
            storage.write_bytes(str(out / name), png)
        write_json = lambda name, value: storage.write_text(  # noqa: E731
            str(out / name), json.dumps(value, indent=2, sort_keys=True) + "\n"
        )
        write_json("comparison.json", comparison)
        write_json("metrics.json", metrics)
        storage.write_text(
            str(out / "summary.md"), report.render_markdown(cnn, transfer, comparison)
        )
        html_text = report.render_html(cnn, transfer, comparison, figures)
        storage.write_text(str(out / "report.html"), html_text)
        # Both results are now held here: their training checkpoints have served their purpose.
        for compared in runs.values():
            checkpoints.release(config.store, compared.raw.get("checkpoint_dir"))
        figs.update(winner=winner, decision=decision.decision, figures=len(figures))
    return CompareResult(
        winner=winner,
        report_html=str(out / "report.html"),
        summary_md=str(out / "summary.md"),
        metrics=metrics,
        champion={
            "decision": decision.decision,
            "reason": decision.reason,
            "promoted": decision.promoted,
            "uri": decision.champion_uri,
            "attempts": decision.attempts,
        },
        comparison=comparison,
    )
