"""The `transfer-learning` KFP pipeline: data prep and weights, two trainings, one comparison.

    data_prep ──────────────► train_cnn ───────┐
        └──────────┐                           ├──► compare
    weights ───────┴─────────► train_transfer ─┘   (GPU; placed by gpu_placement)

Images are a compile-time setting (`build_pipeline(cpu_image, gpu_image)`); every other knob is
a pipeline parameter with a default, changeable in the KFP UI. The defaults are the full
experiment; the CLI's `quick` profile overrides some of them for a laptop.

Caching: data_prep and weights are never KFP-cached, because KFP keys its cache on parameter
values and a source URL (or `auto`) can change content behind the same string; both keep their
own content-addressed caches in the store, so a re-run costs a hash and no rework. They hand on
content-addressed URIs (`<store>/datasets/<name>/<content version>`, `<store>/weights/<sha256>/`)
as parameters, so the training tasks' cache keys follow the data's and the weights' content,
and are cached. compare is not cached: its champion gate reads the store's current champion.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Markdown, Metrics

from components.compare import component as compare_component
from components.data_prep import component as data_prep_component
from components.training import component as training_component
from components.weights import component as weights_component

PIPELINE_NAME = "transfer-learning"
DEFAULT_CPU_IMAGE = training_component.DEFAULT_CPU_IMAGE
DEFAULT_GPU_IMAGE = training_component.DEFAULT_GPU_IMAGE
DEFAULT_STORE = "gs://my-project-tl-store/pipeline"
DEFAULT_GPU_TYPE = "nvidia-l4"

# (cpu request, cpu limit, memory request, memory limit) per task.
RESOURCES = {
    "gpu-placement": ("100m", "500m", "256Mi", "512Mi"),
    "data-prep": ("1", "2", "2Gi", "4Gi"),
    "weights": ("500m", "1", "1Gi", "2Gi"),
    "train-cnn": ("4", "8", "8Gi", "16Gi"),
    "train-transfer": ("4", "8", "16Gi", "32Gi"),
    "compare": ("1", "2", "2Gi", "4Gi"),
}
# (retries, first backoff, backoff factor, max backoff) for steps that can fail transiently:
# network and store hiccups, spot preemption (training resumes from its checkpoint).
RETRIES = {
    "data-prep": (3, "30s", 2.0, "600s"),
    "weights": (3, "30s", 2.0, "600s"),
    "train-cnn": (2, "60s", 2.0, "1800s"),
    "train-transfer": (3, "60s", 2.0, "3600s"),
    "compare": (2, "30s", 2.0, "300s"),
}
CACHED = {
    "gpu-placement": True,
    "data-prep": False,
    "weights": False,
    "train-cnn": True,
    "train-transfer": True,
    "compare": False,
}


class PipelineOutputs(NamedTuple):
    """What a run hands back: the comparison's report, summary and metrics."""

    report: HTML
    summary: Markdown
    metrics: Metrics


def gpu_placement(gpu_type: str, spot: bool) -> NamedTuple(
    "Placement", [("node_selector", dict), ("tolerations", list)]
):
    """Node selector and tolerations for the GPU task (see pipelines.placement)."""
    from collections import namedtuple

    from pipelines.placement import node_selector, tolerations

    placement = namedtuple("Placement", ["node_selector", "tolerations"])
    return placement(node_selector(gpu_type, spot), tolerations(spot))


def _configure(task: dsl.PipelineTask, key: str, retries: bool) -> dsl.PipelineTask:
    """Apply the per-task resources, retries (when `retries`) and caching."""
    cpu_request, cpu_limit, memory_request, memory_limit = RESOURCES[key]
    task.set_display_name(key.replace("-", "_"))
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
    task.set_memory_request(memory_request).set_memory_limit(memory_limit)
    if retries and key in RETRIES:
        count, backoff, factor, max_backoff = RETRIES[key]
        task.set_retry(count, backoff, factor, max_backoff)
    task.set_caching_options(enable_caching=CACHED[key])
    return task


def build_pipeline(
    cpu_image: str = DEFAULT_CPU_IMAGE, gpu_image: str = DEFAULT_GPU_IMAGE, retries: bool = True
):
    """The pipeline function with its components built on the given images.

    `retries` False leaves out the retry policies: kfp.local honours them with their real
    backoff, so a local run that fails would otherwise wait minutes before it says so.
    """
    data_prep_op = data_prep_component.make(cpu_image)
    weights_op = weights_component.make(cpu_image)
    train_cnn_op = training_component.make(cpu_image, name="train-cnn")
    train_transfer_op = training_component.make(gpu_image, name="train-transfer")
    compare_op = compare_component.make(cpu_image)
    placement_op = dsl.component(gpu_placement, base_image=cpu_image, install_kfp_package=False)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fashion-MNIST: a small CNN from scratch against InceptionV3 transfer "
        "learning (cut at mixed7, frozen, Dense 1024 head), compared and champion-gated.",
    )
    def transfer_learning(
        store: str = DEFAULT_STORE,
        source: str = "auto",
        dataset_name: str = "fashion_mnist",
        limit: int = 0,
        val_fraction: float = 0.1,
        image_size: str = "auto",
        weights_url: str = "default",
        weights_sha256: str = "",
        weights_md5: str = "",
        cnn_input_size: int = 56,
        transfer_input_size: int = 150,
        cnn_epochs: int = 20,
        transfer_epochs: int = 10,
        batch_size: int = 128,
        optimizer: str = "adam",
        cnn_learning_rate: float = 1e-3,
        transfer_learning_rate: float = 1e-3,
        augmentation: float = 0.0,
        cut_layer: str = "mixed7",
        fine_tune_from: str = "",
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float = 1e-5,
        margin: float = 0.005,
        seed: int = 42,
        gpu_type: str = DEFAULT_GPU_TYPE,
        gpu_count: int = 1,
        spot: bool = False,
    ) -> PipelineOutputs:
        """Compare a CNN from scratch with InceptionV3 transfer learning.

        store: gs://bucket/prefix (or a local folder in kfp.local) for datasets, weights,
            checkpoints and the champion file. limit: images per source split, 0 = all.
        image_size: photo folders only; "auto" keeps uniform sizes and centre-crops mixed ones
            to 150x150, "HxW" or "N" centre-crops every image to that size.
        weights_url: "default" (Keras' official file), a URL, gs:// URI or path, or "none" to
            train the transfer model from scratch. fine_tune_from: "" = no fine-tuning.
        gpu_type: GKE accelerator (node label cloud.google.com/gke-accelerator). spot: run the
            GPU step on spot nodes.
        """
        prep = _configure(
            data_prep_op(
                store=store,
                source=source,
                dataset_name=dataset_name,
                limit=limit,
                val_fraction=val_fraction,
                seed=seed,
                image_size=image_size,
            ),
            "data-prep",
            retries,
        )
        fetched = _configure(
            weights_op(store=store, url=weights_url, sha256=weights_sha256, md5=weights_md5),
            "weights",
            retries,
        )
        shared = {
            "dataset_uri": prep.outputs["dataset_uri"],
            "store": store,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "augmentation": augmentation,
            "seed": seed,
        }
        cnn = _configure(
            train_cnn_op(
                model="seed_cnn",
                input_size=cnn_input_size,
                epochs=cnn_epochs,
                learning_rate=cnn_learning_rate,
                **shared,
            ),
            "train-cnn",
            retries,
        )
        transfer = _configure(
            train_transfer_op(
                model="inception_v3",
                weights_uri=fetched.outputs["weights_uri"],
                input_size=transfer_input_size,
                epochs=transfer_epochs,
                learning_rate=transfer_learning_rate,
                cut_layer=cut_layer,
                fine_tune_from=fine_tune_from,
                fine_tune_epochs=fine_tune_epochs,
                fine_tune_learning_rate=fine_tune_learning_rate,
                **shared,
            ),
            "train-transfer",
            retries,
        )
        placement = _configure(placement_op(gpu_type=gpu_type, spot=spot), "gpu-placement", retries)
        transfer.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpu_count)
        kubernetes.add_node_selector_json(transfer, placement.outputs["node_selector"])
        kubernetes.add_toleration(
            transfer, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
        )
        kubernetes.add_toleration_json(transfer, placement.outputs["tolerations"])
        compared = _configure(
            compare_op(
                cnn_model=cnn.outputs["trained_model"],
                transfer_model=transfer.outputs["trained_model"],
                store=store,
                dataset_name=dataset_name,
                margin=margin,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "compare",
            retries,
        )
        return PipelineOutputs(
            compared.outputs["report"], compared.outputs["summary"], compared.outputs["metrics"]
        )

    return transfer_learning
