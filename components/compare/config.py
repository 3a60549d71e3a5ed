"""The compare step's settings and its result: every parameter defined once, here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.common.config import ConfigError, option
from components.common.names import check_name
from components.common.result import Role


@dataclass(frozen=True)
class CompareConfig:
    """Compare settings; validated at start-up."""

    cnn_dir: str = option("", "local folder with the CNN run's metrics.json, history.json, ...")
    transfer_dir: str = option("", "local folder with the transfer run's outputs")
    output_dir: str = option("compare", "local folder for report.html, summary.md, *.png, *.json")
    store: str = option(
        "store", "gs://bucket/prefix or a folder; champion at <store>/champion/<dataset>.json"
    )
    dataset_name: str = option(
        "fashion_mnist", "dataset name (names the champion file)", aliases=("--dataset",)
    )
    margin: float = option(
        0.005, "test accuracy the winner must gain over the champion (0.005 = half a point)"
    )
    promote_on_new_split: bool = option(
        False, "promote even when the champion was measured on another test split"
    )
    cnn_model_uri: str = option("", "model pointer recorded in the champion file; '': cnn_dir")
    transfer_model_uri: str = option("", "same for the transfer model; '': transfer_dir")
    run_id: str = option("", "pipeline run id, recorded in the champion file")

    def __post_init__(self) -> None:
        """Validate at start-up."""
        if not self.cnn_dir or not self.transfer_dir:
            raise ConfigError("cnn_dir and transfer_dir are required")
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"margin must be in [0, 1), got {self.margin}")
        check_name(self.dataset_name, "dataset_name")


@dataclass(frozen=True)
class CompareResult:
    """The winner, where the report is, the flat metrics and the champion decision."""

    winner: Role | None  # None when an accuracy is missing
    report_html: str
    summary_md: str
    metrics: dict[str, float]
    champion: dict[str, Any]
    comparison: dict[str, Any] = field(repr=False, default_factory=dict)
