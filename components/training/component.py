"""KFP components for the training steps: train_cnn (CPU image) and train_transfer (GPU image)."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Metrics, Model, Output

from components.common.images import DEFAULT_CPU_IMAGE

# Where the pipeline mounts the task's scratch volume, when it does (pipelines/pipeline.py).
SCRATCH_ENV = "TL_SCRATCH_DIR"


def train(
    trained_model: Output[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    history: Output[Artifact],
    dataset_uri: str,
    store: str,
    model: str = "seed_cnn",
    weights_uri: str = "",
    scratch: bool = False,
    input_size: int = 0,
    epochs: int = 0,
    batch_size: int = 128,
    optimizer: str = "adam",
    learning_rate: float = 0.0,
    label_smoothing: float = -1.0,
    augmentation: float = 0.0,
    mirror: str = "",
    cut_layer: str = "",
    fine_tune_from: str = "",
    fine_tune_epochs: int = 0,
    fine_tune_learning_rate: float = 1e-5,
    seed: int = 42,
    checkpoint_interval: float = 0.0,
):
    """Train `model` on the dataset at `dataset_uri` and publish its outputs as artifacts.

    `weights_uri` empty means a backbone model trains from scratch (random initialisation,
    every layer trained; `scratch` says so explicitly, see TrainConfig); 0 or empty means the
    model's default for `input_size`, `epochs`, `learning_rate` and `cut_layer`, and a negative
    `label_smoothing` or an empty `mirror` the model's own. The dataset and weights come in as
    content-addressed URIs, so the KFP cache key follows their content. Checkpoints go to
    `<store>/checkpoints/<hash of the inputs>/`, so a retried task resumes.
    """
    import atexit
    import os
    import sys
    import tempfile
    from pathlib import Path

    def _exit_before_teardown() -> None:
        """Exit 0 without the interpreter's teardown, unless the executor failed after us.

        Runs at exit, after KFP's executor has written the outputs. TensorFlow's teardown of a
        large model (a from-scratch backbone) can crash the process after every output was
        written, which fails a finished task; an uncaught exception (sys.last_value) keeps its
        exit status.
        """
        if getattr(sys, "last_value", None) is None:
            exit_without_teardown(0)

    from components.common.cli import exit_without_teardown
    from components.common.logging import configure

    configure()
    from components.training import artifacts
    from components.training.checkpoint import EXIT_PREEMPTED, TrainingInterrupted
    from components.training.train import run

    scratch_dir = os.environ.get("TL_SCRATCH_DIR", "")  # SCRATCH_ENV: the cluster's scratch volume
    if scratch_dir and os.path.isdir(scratch_dir):
        os.environ["TMPDIR"] = tempfile.tempdir = scratch_dir  # work folder, caches, TF temp
    with tempfile.TemporaryDirectory(prefix="train-") as work:
        config = artifacts.config(
            work=Path(work),
            store=store,
            dataset_uri=dataset_uri,
            model=model,
            weights_uri=weights_uri,
            scratch=scratch,
            input_size=input_size,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            learning_rate=learning_rate,
            label_smoothing=label_smoothing,
            augmentation=augmentation,
            mirror=mirror,
            cut_layer=cut_layer,
            fine_tune_from=fine_tune_from,
            fine_tune_epochs=fine_tune_epochs,
            fine_tune_learning_rate=fine_tune_learning_rate,
            seed=seed,
            checkpoint_interval=checkpoint_interval,
        )
        try:
            run(config)
        except TrainingInterrupted:
            preempted = True  # SIGTERM: the newest state is in the store, nothing is published
        else:
            preempted = False
            artifacts.publish(
                Path(config.output_dir),
                model=trained_model,
                metrics=metrics,
                classification=classification,
                history=history,
            )
            main_spec = getattr(sys.modules["__main__"], "__spec__", None)
            if main_spec is not None and main_spec.name == "kfp.dsl.executor_main":
                atexit.register(_exit_before_teardown)  # only as KFP's task process
    if preempted:
        # 143 (128 + SIGTERM) fails the task, so the retry policy resumes it, without
        # TensorFlow's interpreter teardown, which can take longer than the save itself.
        exit_without_teardown(EXIT_PREEMPTED)


def make(image: str = DEFAULT_CPU_IMAGE, name: str = "train") -> dsl.base_component.BaseComponent:
    """The training component on `image`; `name` becomes the component's name in the IR."""
    component = dsl.component(train, base_image=image, install_kfp_package=False)
    component.component_spec.name = name
    component.name = name
    return component
