"""The compare step: read the training runs (arms), plot, gate the champion, write the report."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

from components.common import checkpoints, storage
from components.common.dataset import DataError
from components.common.logging import get_logger, step
from components.common.result import METRICS_FILE, NUMBER_FIELDS, Arm
from components.compare import arms as arms_module
from components.compare import champion, plots, report
from components.compare.arms import ArmRuns
from components.compare.config import CompareConfig, CompareResult
from components.compare.inputs import RunOutputs, check_comparable, load_run

log = get_logger("compare")

# Per-model numbers in the flat metrics file: <role>_<name>.
MODEL_METRICS = tuple(name for name in NUMBER_FIELDS if name != "epochs_run")


def headline_arm(arms: list[ArmRuns]) -> ArmRuns | None:
    """The backbone arm the CNN is set against in the headline figures and plots.

    The best pretrained arm, else the best from-scratch one (None when there is no backbone arm).
    """
    for kind in (Arm.PRETRAINED, Arm.SCRATCH):
        found = [arm for arm in arms if arm.arm == kind]
        if found:
            return max(found, key=lambda arm: -1.0 if arm.accuracy is None else arm.accuracy)
    return None


def _pair_metrics(metrics: dict, prefix: str, pair: dict[str, Any] | None) -> None:
    if pair is None:
        return
    metrics[f"{prefix}_p_value"] = pair["p_value_holm"]
    metrics[f"{prefix}_ci_low"] = pair["ci_low"]
    metrics[f"{prefix}_ci_high"] = pair["ci_high"]
    metrics[f"{prefix}_significant"] = 1.0 if pair["significant"] else 0.0


def _arm_metrics(arm: ArmRuns) -> dict[str, float]:
    metrics = {}
    for name in MODEL_METRICS:
        value = arm.number(name)
        if value is not None:
            metrics[f"{arm.key}_{name}"] = value
    if len(arm.runs) > 1:
        metrics[f"{arm.key}_seeds"] = float(len(arm.runs))
        if arm.accuracy_sd is not None:
            metrics[f"{arm.key}_test_accuracy_sd"] = arm.accuracy_sd
    return metrics


def flat_metrics(
    arms: list[ArmRuns],
    winner: ArmRuns | None,
    promoted: bool,
    tested: dict[str, Any] | None = None,
    split: list[dict[str, Any]] | None = None,
) -> dict:
    """Stable names -> numbers for the KFP Metrics artifact; missing numbers are left out.

    Per arm `<key>_<number>` (mean over seeds; `<key>_test_accuracy_sd` and `<key>_seeds` with
    several seeds); the CNN against the headline arm (`accuracy_difference`, `mcnemar_p_value`,
    ...); the gain split (`architecture_gain`, `pretraining_gain`, each with `_p_value`,
    `_ci_low`, `_ci_high`, `_significant`; prefixed by the backbone with several backbones).
    """
    metrics: dict[str, float] = {}
    for arm in arms:
        metrics.update(_arm_metrics(arm))
    cnn = next((arm for arm in arms if arm.arm == Arm.CNN), None)
    other = headline_arm(arms)
    if cnn and other and cnn.accuracy is not None and other.accuracy is not None:
        metrics["accuracy_difference"] = other.accuracy - cnn.accuracy
    if winner is not None:
        metrics["winner_is_transfer"] = 0.0 if winner.arm == Arm.CNN else 1.0
    metrics["transfer_pretrained"] = 1.0 if any(arm.pretrained for arm in arms) else 0.0
    metrics["champion_promoted"] = 1.0 if promoted else 0.0
    pair = arms_module.find_pair(tested, cnn.key, other.key) if cnn and other else None
    if pair is not None:
        metrics["mcnemar_p_value"] = pair["p_value_holm"]
        metrics["accuracy_difference_ci_low"] = pair["ci_low"]
        metrics["accuracy_difference_ci_high"] = pair["ci_high"]
        metrics["difference_significant"] = 1.0 if pair["significant"] else 0.0
    for gain in split or []:
        if gain["accuracy_difference"] is not None:
            metrics[gain["metric"]] = gain["accuracy_difference"]
        if gain["difference_sd"] is not None:
            metrics[f"{gain['metric']}_sd"] = gain["difference_sd"]
        _pair_metrics(metrics, gain["metric"], gain["pair"])
    return metrics


def candidate_record(
    config: CompareConfig, arm: ArmRuns | None, pointers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The champion record the winning arm would get: its best seed's run.

    Empty accuracy when there is no winner. `pointers` maps run folders to the model URIs.
    """
    if arm is None:
        return {"model": None, "test_accuracy": None, "dataset": config.dataset_name}
    run = arm.best_run()
    pointer = (pointers or {}).get(run.folder, "")
    return {
        "model": run.model,
        "display_name": arm.display_name,
        "role": arm.key,
        "arm": str(arm.arm),
        "seed": run.metrics.seed,
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


def _model_summary(arm: ArmRuns) -> dict[str, Any]:
    run = arm.first
    per_class = run.per_class_accuracy()
    return {
        "model": arm.model,
        "arm": str(arm.arm),
        "display_name": arm.display_name,
        "pretrained": arm.pretrained,
        "weights_sha256": run.metrics.weights_sha256,
        "folder": run.folder,
        "folders": [r.folder for r in arm.runs],
        "seeds": arm.seeds,
        **{name: arm.number(name) for name in run.numbers},
        "test_accuracy_sd": arm.accuracy_sd,
        "test_accuracies": [r.accuracy for r in arm.runs],
        "per_class_accuracy": None
        if per_class is None
        else {
            name: (None if value != value else float(value))
            for name, value in zip(run.class_names, per_class, strict=True)
        },
        "history_epochs": len(run.history.epoch),
    }


def _notes(arms: list[ArmRuns], tested: dict[str, Any]) -> list[str]:
    runs = [run for arm in arms for run in arm.runs]
    notes = [note for run in runs for note in run.notes]
    if not tested["computed"]:
        notes.append(tested["reason"])
    lengths = {len(run.history.epoch) for run in runs}
    if len(lengths) > 1:
        counts = (
            " vs ".join(str(len(run.history.epoch)) for run in runs)
            if len(runs) == 2
            else ", ".join(f"{run.role} {len(run.history.epoch)}" for run in runs)
        )
        notes.append(f"the histories differ in length ({counts} epochs); each is plotted as it is")
    seeds = {len(arm.runs) for arm in arms}
    if len(seeds) > 1:
        notes.append(
            "the arms ran different numbers of seeds; pairs are tested seed by seed up to the "
            "smaller count"
        )
    mirrored = [arm.display_name for arm in arms if arm.first.metrics.mirror_averaged]
    if mirrored:
        notes.append(
            f"{', '.join(mirrored)}: trained with random flips; test figures are of predictions "
            "averaged over each image and its mirror image, the validation curves of single "
            "images (the training step's mirror parameter)"
        )
    if not any(arm.pretrained for arm in arms):
        notes.append("no pretrained backbone ran: this run does not measure transfer learning")
    return notes


def _comparison(config, arms, winner, metrics, decision, notes, figures, tested, split) -> dict:
    """comparison.json: names, headline, per-arm figures, gain split, champion and notes."""
    runs = [run for arm in arms for run in arm.runs]
    source = next((r for r in runs if r.metrics.test_split_sha256), runs[0]).metrics
    return {
        "format_version": 2,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "name": config.dataset_name,
            "version": source.dataset_version,
            "uri": source.dataset_uri,
            "test_split_sha256": source.test_split_sha256,
        },
        "class_names": list(runs[0].class_names),
        "winner": winner.key if winner else None,
        "winner_model": winner.model if winner else None,
        "winner_display_name": winner.display_name if winner else None,
        "headline": report.headline(arms, winner, tested, split),
        "arms": [arm.key for arm in arms],
        "models": {arm.key: _model_summary(arm) for arm in arms},
        "metrics": metrics,
        "significance": tested,
        "gains": split,
        "champion": {**decision.to_dict(), "margin": config.margin},
        "notes": notes,
        "figures": list(figures),
    }


def _write(out: Path, arms, comparison: dict, figures: dict, metrics: dict) -> None:
    for name, (_, png) in figures.items():
        storage.write_bytes(str(out / name), png)
    for name, value in (("comparison.json", comparison), (METRICS_FILE, metrics)):
        storage.write_text(str(out / name), json.dumps(value, indent=2, sort_keys=True) + "\n")
    storage.write_text(str(out / "summary.md"), report.render_markdown(arms, comparison))
    html_text = report.render_html(arms, comparison, figures)
    storage.write_text(str(out / "report.html"), html_text)


def load_runs(config: CompareConfig) -> tuple[list[RunOutputs], dict[str, str]]:
    """Every run of the config, checked comparable, and their folder -> model URI pointers."""
    folders = config.folders()
    runs = [load_run(folder, f"run {index + 1}") for index, (folder, _) in enumerate(folders)]
    # Every pair: a run without a test-split hash must not let two others on different splits
    # through (a check against the first run only would).
    for first, second in itertools.combinations(runs, 2):
        check_comparable(first, second)
    return runs, {str(Path(folder)): uri for folder, uri in folders if uri}


def run(config: CompareConfig) -> CompareResult:
    """Compare the two runs, gate the champion, and write the report files to output_dir."""
    with step(log, "compare", runs=len(config.folders())) as figs:
        loaded, pointers = load_runs(config)
        arms = arms_module.group(loaded)
        if len(arms) < 2:
            raise DataError(
                f"compare needs at least two arms to compare; the {len(loaded)} run(s) "
                f"({', '.join(run.folder for run in loaded)}) are all one arm"
            )
        winner = arms_module.pick_winner(arms)
        tested = arms_module.significance(arms)
        split = arms_module.gains(arms, tested)
        cnn = next((arm for arm in arms if arm.arm == Arm.CNN), arms[0])
        other = headline_arm([arm for arm in arms if arm is not cnn]) or next(
            arm for arm in arms if arm is not cnn
        )
        others = tuple(arm.first for arm in arms if arm not in (cnn, other))
        figures = plots.all_figures(cnn.first, other.first, others)
        decision = champion.gate(
            champion.champion_uri(config.store, config.dataset_name),
            candidate_record(config, winner, pointers),
            config.margin,
            promote_on_new_split=config.promote_on_new_split,
        )
        metrics = flat_metrics(arms, winner, decision.promoted, tested, split)
        notes = _notes(arms, tested)
        comparison = _comparison(
            config, arms, winner, metrics, decision, notes, figures, tested, split
        )
        out = Path(config.output_dir)
        _write(out, arms, comparison, figures, metrics)
        # Every result is now held here: their training checkpoints have served their purpose.
        for compared in loaded:
            checkpoints.release(config.store, compared.metrics.checkpoint_dir)
        figs.update(
            winner=winner.key if winner else None, decision=decision.decision, figures=len(figures)
        )
    return CompareResult(
        winner=winner.key if winner else None,
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
