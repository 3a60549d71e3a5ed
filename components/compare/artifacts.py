"""The compare step's KFP artifacts: input Model folders -> config, outputs -> artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common.artifacts import copy_file, log_metrics
from components.common.result import METRICS_FILE
from components.compare.config import CompareConfig, CompareResult


def config(*, models, work: Path, **params) -> CompareConfig:
    """The CompareConfig for the compare task: every trained Model folder in, `work/out` out.

    Each run is identified by the arm, model and seed in its metrics.json, not by its position.
    """
    return CompareConfig(
        run_dirs=tuple(model.path for model in models),
        run_uris=tuple(model.uri for model in models),
        output_dir=str(work / "out"),
        **params,
    )


def publish(result: CompareResult, *, report, summary, metrics, figures) -> None:
    """Publish the comparison: HTML report, Markdown summary, flat Metrics, figures folder."""
    output_dir = Path(result.report_html).parent
    copy_file(Path(result.report_html), report)
    copy_file(Path(result.summary_md), summary)
    log_metrics(metrics, result.metrics)
    Path(figures.path).mkdir(parents=True, exist_ok=True)
    for path in sorted(output_dir.iterdir()):
        if path.suffix in (".png", ".json") and path.name != METRICS_FILE:
            shutil.copyfile(path, Path(figures.path) / path.name)
    decision = {k: v for k, v in result.champion.items() if isinstance(v, str | int | float | bool)}
    for artifact in (report, summary, figures):
        artifact.metadata.update({f"champion_{k}": v for k, v in decision.items()})
