"""The compare step's settings and its result: every parameter defined once, here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.common.config import ConfigError, option
from components.common.names import check_name


def split_list(text: str) -> tuple[str, ...]:
    """A comma-separated list (empty items dropped)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class CompareConfig:
    """Compare settings; validated at start-up."""

    cnn_dir: str = option("", "local folder with the CNN run's metrics.json, history.json, ...")
    transfer_dir: str = option("", "local folder with the transfer run's outputs")
    run_dirs: tuple[str, ...] = option(
        (),
        "more training-run folders, comma-separated: every run is identified by the arm, model "
        "and seed in its metrics.json",
        parse=split_list,
    )
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
    run_uris: tuple[str, ...] = option(
        (), "model pointers of run_dirs, in the same order; '': the folder", parse=split_list
    )
    run_id: str = option("", "pipeline run id, recorded in the champion file")

    def __post_init__(self) -> None:
        """Validate at start-up."""
        if len(self.folders()) < 2:
            raise ConfigError(
                "compare needs at least two training runs: cnn_dir, transfer_dir and run_dirs "
                f"name {len(self.folders())}"
            )
        if self.run_uris and len(self.run_uris) != len(self.run_dirs):
            raise ConfigError(
                f"run_uris has {len(self.run_uris)} entries for {len(self.run_dirs)} run_dirs"
            )
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"margin must be in [0, 1), got {self.margin}")
        check_name(self.dataset_name, "dataset_name")

    def folders(self) -> list[tuple[str, str]]:
        """(folder, model pointer) of every run to compare, in order."""
        uris = self.run_uris or ("",) * len(self.run_dirs)
        named = [(self.cnn_dir, self.cnn_model_uri), (self.transfer_dir, self.transfer_model_uri)]
        return [(f, u) for f, u in [*named, *zip(self.run_dirs, uris, strict=True)] if f]


@dataclass(frozen=True)
class CompareResult:
    """The winner, where the report is, the flat metrics and the champion decision."""

    winner: str | None  # the winning arm's key; None when an accuracy is missing
    report_html: str
    summary_md: str
    metrics: dict[str, float]
    champion: dict[str, Any]
    comparison: dict[str, Any] = field(repr=False, default_factory=dict)
