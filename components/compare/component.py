"""KFP component for the comparison step: the trained models (arms) -> report, metrics, champion."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output

from components.common.images import DEFAULT_CPU_IMAGE


def compare(
    cnn_models: Input[list[Model]],
    backbone_models: Input[list[Model]],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    figures: Output[Artifact],
    store: str,
    dataset_name: str = "fashion_mnist",
    margin: float = 0.005,
    run_id: str = "",
) -> NamedTuple("CompareOutputs", [("winner", str), ("promoted", bool)]):
    """Compare the training outputs; gate the winner into `<store>/champion/<dataset>.json`.

    `cnn_models` and `backbone_models` are the trained models of the pipeline's training arms
    (dsl.Collected over its ParallelFor loops); every run is identified by the arm, model and
    seed in its metrics.json.

    `run_id` is recorded in the champion file. Outputs the self-contained HTML report, the
    Markdown summary, a flat Metrics artifact with stable names, and a folder of the PNG
    figures plus comparison.json.
    """
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.common.logging import configure

    configure()
    from components.compare import artifacts
    from components.compare.compare import run

    with tempfile.TemporaryDirectory(prefix="compare-") as work:
        config = artifacts.config(
            models=[*cnn_models, *backbone_models],
            work=Path(work),
            store=store,
            dataset_name=dataset_name,
            margin=margin,
            run_id=run_id,
        )
        result = run(config)
        artifacts.publish(result, report=report, summary=summary, metrics=metrics, figures=figures)
    outputs = namedtuple("CompareOutputs", ["winner", "promoted"])
    return outputs(str(result.winner), bool(result.champion.get("promoted", False)))


def make(image: str = DEFAULT_CPU_IMAGE) -> dsl.base_component.BaseComponent:
    """The component, built on `image` (the project image, which has this package installed)."""
    return dsl.component(compare, base_image=image, install_kfp_package=False)
