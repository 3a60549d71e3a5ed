"""The compare step: read both training runs, plot, gate the champion, write the report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from components.common import checkpoints, storage
from components.common.logging import get_logger, step
from components.common.result import METRICS_FILE, NUMBER_FIELDS, Role
from components.compare import champion, plots, report, stats
from components.compare.config import CompareConfig, CompareResult
from components.compare.inputs import RunOutputs, check_comparable, load_run

log = get_logger("compare")

# Per-model numbers in the flat metrics file: <role>_<name>.
MODEL_METRICS = tuple(name for name in NUMBER_FIELDS if name != "epochs_run")


def pick_winner(cnn: RunOutputs, transfer: RunOutputs) -> Role | None:
    """The winner's role: the higher test accuracy, or None when either is missing.

    An exact tie goes to the model with fewer parameters (the CNN when those tie too).
    """
    if cnn.accuracy is None or transfer.accuracy is None:
        return None
    if cnn.accuracy != transfer.accuracy:
        return Role.TRANSFER if transfer.accuracy > cnn.accuracy else Role.CNN
    params = [r.numbers["params_total"] or float("inf") for r in (cnn, transfer)]
    return Role.TRANSFER if params[1] < params[0] else Role.CNN


def significance(cnn: RunOutputs, transfer: RunOutputs) -> dict[str, Any]:
    """The paired test of transfer vs CNN on the shared test images, for comparison.json.

    `{"computed": True, "test": ..., "alpha": ..., "pairs": [PairTest dicts]}` (the
    difference is transfer - cnn), or `{"computed": False, "reason": ...}` when a run has no
    test predictions (runs written before they were saved).
    """
    missing = [str(run.role) for run in (cnn, transfer) if run.predictions is None]
    if missing:
        return {
            "computed": False,
            "reason": f"no test predictions for {' and '.join(missing)} (an older run), so the "
            "significance of the difference could not be computed",
        }
    labels = cnn.predictions.labels
    pairs = stats.compare_pairs(
        {
            str(Role.CNN): cnn.predictions.predictions,
            str(Role.TRANSFER): transfer.predictions.predictions,
        },
        labels,
    )
    return {
        "computed": True,
        "test": stats.TEST_NAME,
        "alpha": stats.ALPHA,
        "confidence": stats.CONFIDENCE,
        "resamples": stats.RESAMPLES,
        "correction": "Holm",
        "pairs": [pair.to_dict() for pair in pairs],
    }


def flat_metrics(
    runs: dict[Role, RunOutputs],
    winner: Role | None,
    promoted: bool,
    tested: dict[str, Any] | None = None,
) -> dict:
    """Stable names -> numbers for the KFP Metrics artifact; missing numbers are left out."""
    metrics: dict[str, float] = {}
    for role, run in runs.items():
        for name in MODEL_METRICS:
            if run.numbers[name] is not None:
                metrics[f"{role}_{name}"] = run.numbers[name]
    cnn, transfer = runs[Role.CNN], runs[Role.TRANSFER]
    if cnn.accuracy is not None and transfer.accuracy is not None:
        metrics["accuracy_difference"] = transfer.accuracy - cnn.accuracy
    if winner is not None:
        metrics["winner_is_transfer"] = 1.0 if winner == Role.TRANSFER else 0.0
    metrics["transfer_pretrained"] = 1.0 if transfer.pretrained else 0.0
    metrics["champion_promoted"] = 1.0 if promoted else 0.0
    if tested and tested.get("computed"):
        pair = tested["pairs"][0]
        metrics["mcnemar_p_value"] = pair["p_value_holm"]
        metrics["accuracy_difference_ci_low"] = pair["ci_low"]
        metrics["accuracy_difference_ci_high"] = pair["ci_high"]
        metrics["difference_significant"] = 1.0 if pair["significant"] else 0.0
    return metrics


def candidate_record(config: CompareConfig, run: RunOutputs | None) -> dict[str, Any]:
    """The champion record the winner would get (empty accuracy when there is no winner)."""
    if run is None:
        return {"model": None, "test_accuracy": None, "dataset": config.dataset_name}
    pointer = config.cnn_model_uri if run.role == Role.CNN else config.transfer_model_uri
    return {
        "model": run.model,
        "display_name": run.display_name,
        "role": str(run.role),
        "test_accuracy": run.accuracy,
        "test_loss": run.numbers["test_loss"],
        "train_seconds": run.numbers["train_seconds"],
        "pretrained": run.pretrained,
        "weights_sha256": run.metrics.weights_sha256,
        "dataset": config.dataset_name,
        "dataset_version": run.metrics.dataset_version,
        "dataset_uri": run.metrics.dataset_uri,
        "test_split_sha256": run.metrics.test_split_sha256,
        "model_uri": pointer or run.folder,
        "run_id": config.run_id or None,
        **(
            {
                champion.PREDICTIONS_FIELD: {
                    "test_split_sha256": run.predictions.test_split_sha256,
                    "predictions": run.predictions.predictions.tolist(),
                    "labels": run.predictions.labels.tolist(),
                }
            }
            if run.predictions is not None and run.predictions.test_split_sha256
            else {}
        ),
    }


def _model_summary(run: RunOutputs) -> dict[str, Any]:
    per_class = run.per_class_accuracy()
    return {
        "model": run.model,
        "display_name": run.display_name,
        "pretrained": run.pretrained,
        "weights_sha256": run.metrics.weights_sha256,
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


def _notes(cnn: RunOutputs, transfer: RunOutputs, tested: dict[str, Any]) -> list[str]:
    notes = [*cnn.notes, *transfer.notes]
    if not tested["computed"]:
        notes.append(tested["reason"])
    if len(cnn.history.epoch) != len(transfer.history.epoch):
        notes.append(
            f"the histories differ in length ({len(cnn.history.epoch)} vs "
            f"{len(transfer.history.epoch)} epochs); each is plotted as it is"
        )
    if not transfer.pretrained:
        notes.append("transfer: the backbone started from random weights, not pretrained ones")
    return notes


def _comparison(config, runs, winner, metrics, decision, notes, figures, tested) -> dict:
    """comparison.json: names, headline, per-model figures, champion decision and notes."""
    cnn, transfer = runs[Role.CNN], runs[Role.TRANSFER]
    source = (transfer if transfer.metrics.test_split_sha256 else cnn).metrics
    return {
        "format_version": 1,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "name": config.dataset_name,
            "version": source.dataset_version,
            "uri": source.dataset_uri,
            "test_split_sha256": source.test_split_sha256,
        },
        "class_names": list(cnn.class_names),
        "winner": winner,
        "winner_model": runs[winner].model if winner else None,
        "winner_display_name": runs[winner].display_name if winner else None,
        "headline": report.headline(cnn, transfer, winner, tested),
        "models": {str(role): _model_summary(run) for role, run in runs.items()},
        "metrics": metrics,
        "significance": tested,
        "champion": {**decision.to_dict(), "margin": config.margin},
        "notes": notes,
        "figures": list(figures),
    }


def _write(out: Path, runs, comparison: dict, figures: dict, metrics: dict) -> None:
    cnn, transfer = runs[Role.CNN], runs[Role.TRANSFER]
    for name, (_, png) in figures.items():
        storage.write_bytes(str(out / name), png)
    for name, value in (("comparison.json", comparison), (METRICS_FILE, metrics)):
        storage.write_text(str(out / name), json.dumps(value, indent=2, sort_keys=True) + "\n")
    storage.write_text(str(out / "summary.md"), report.render_markdown(cnn, transfer, comparison))
    html_text = report.render_html(cnn, transfer, comparison, figures)
    storage.write_text(str(out / "report.html"), html_text)


def run(config: CompareConfig) -> CompareResult:
    """Compare the two runs, gate the champion, and write the report files to output_dir."""
    with step(log, "compare", cnn_dir=config.cnn_dir, transfer_dir=config.transfer_dir) as figs:
        runs = {
            Role.CNN: load_run(config.cnn_dir, Role.CNN),
            Role.TRANSFER: load_run(config.transfer_dir, Role.TRANSFER),
        }
        check_comparable(*runs.values())
        winner = pick_winner(*runs.values())
        tested = significance(*runs.values())
        figures = plots.all_figures(*runs.values())
        decision = champion.gate(
            champion.champion_uri(config.store, config.dataset_name),
            candidate_record(config, runs.get(winner) if winner else None),
            config.margin,
            promote_on_new_split=config.promote_on_new_split,
        )
        metrics = flat_metrics(runs, winner, decision.promoted, tested)
        notes = _notes(*runs.values(), tested)
        comparison = _comparison(config, runs, winner, metrics, decision, notes, figures, tested)
        out = Path(config.output_dir)
        _write(out, runs, comparison, figures, metrics)
        # Both results are now held here: their training checkpoints have served their purpose.
        for compared in runs.values():
            checkpoints.release(config.store, compared.metrics.checkpoint_dir)
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
