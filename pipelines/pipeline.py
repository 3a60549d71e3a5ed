"""The `transfer-learning` KFP pipeline: data prep, the training arms, one comparison.

    data_prep ──────────┬──► ParallelFor cnn seed: train_cnn ─────────────────┐
    plan_cnn_seeds ─────┘                                                      ├─► compare
    plan_backbone_arms ────► ParallelFor backbone arm: weights ─► train_transfer┘
                             (backbone x seed x pretrained/scratch; GPU, placed by gpu_placement)

plan_cnn_seeds and plan_backbone_arms (pipelines/arms.py) turn `seeds`, `backbones`, `scratch`
and `weights_url` into the loops' items (two tasks: kfp.local iterates only over a task's
single output); compare receives every trained model (dsl.Collected) and identifies each run
by the arm, model and seed in its metrics.json.

Images are a compile-time setting (`build_pipeline(cpu_image, gpu_image)`); every other knob is
a pipeline parameter with a default, changeable in the KFP UI. The defaults are the full
experiment and come from the steps' configs (tests/test_contracts.py checks that they agree);
the CLI's `quick` profile overrides some of them for a laptop.

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

from components.common.backbones import DEFAULT_BACKBONE
from components.common.config import defaults
from components.common.images import DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE
from components.compare import component as compare_component
from components.compare.config import CompareConfig
from components.data_prep import component as data_prep_component
from components.data_prep.config import PrepConfig
from components.training import component as training_component
from components.training.config import TrainConfig
from components.training.models import MODELS, SEED_CNN
from components.weights import component as weights_component
from components.weights.config import WeightsConfig
from pipelines.arms import plan_backbone_arms, plan_cnn_seeds
from pipelines.placement import gpu_node

PIPELINE_NAME = "transfer-learning"
DEFAULT_STORE = "gs://my-project-tl-store/pipeline"
DEFAULT_GPU_TYPE = "nvidia-l4"
# Parameter defaults: the steps' config defaults, and the models' own sizes and epochs.
PREP, WEIGHTS = defaults(PrepConfig), defaults(WeightsConfig)
TRAIN, COMPARE = defaults(TrainConfig), defaults(CompareConfig)
CNN, TRANSFER = MODELS[SEED_CNN], MODELS[DEFAULT_BACKBONE]

# (cpu request, cpu limit, memory request, memory limit) per task; train-transfer's row comes
# from the GPU node it is compiled for (pipelines.placement.GPU_NODES, `build_pipeline(gpu_type)`).
RESOURCES = {
    "gpu-placement": ("100m", "500m", "256Mi", "512Mi"),
    "plan-cnn-seeds": ("100m", "500m", "256Mi", "512Mi"),
    "plan-backbone-arms": ("100m", "500m", "256Mi", "512Mi"),
    "data-prep": ("1", "2", "2Gi", "4Gi"),
    "weights": ("500m", "1", "1Gi", "2Gi"),
    "train-cnn": ("4", "8", "8Gi", "16Gi"),
    "compare": ("1", "2", "2Gi", "4Gi"),
}
# train_transfer's local scratch (its temp folder: downloaded shards, weights and the
# frozen-backbone feature cache): an emptyDir on the GPU node's boot disk, capped at SCRATCH_SIZE;
# the component makes it TMPDIR when it is mounted (TL_SCRATCH_DIR). KFP 2.17 takes
# the size as a literal. The full Fashion-MNIST at 150 px caches 70,000 x 7x7x768 float16
# features (5.3 GB) plus the shards; 48Gi leaves room for larger inputs (docs/operations.md).
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/scratch"
SCRATCH_SIZE = "48Gi"
# activeDeadlineSeconds of every task's pod (per attempt: a retry is a new pod).
TIMEOUTS = {
    "gpu-placement": 600,
    "plan-cnn-seeds": 600,
    "plan-backbone-arms": 600,
    "data-prep": 4 * 3600,
    "weights": 3600,
    "train-cnn": 6 * 3600,
    "train-transfer": 12 * 3600,
    "compare": 3600,
}
# Every task pod: the images' user (docker/Dockerfile.*), and the labels the NetworkPolicy
# k8s/base/task-network-policy.yaml selects.
RUN_AS_USER = 10001
TASK_LABELS = {
    "app.kubernetes.io/part-of": "transfer-learning",
    "app.kubernetes.io/component": "pipeline-task",
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
    "plan-cnn-seeds": True,
    "plan-backbone-arms": True,
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


def gpu_placement(gpu_type: str, spot: bool, sized_for: str) -> NamedTuple(
    "Placement", [("node_selector", dict), ("tolerations", list)]
):
    """Node selector and tolerations for the GPU task (see pipelines.placement).

    `sized_for` is the accelerator the resources were compiled for: a gpu_type whose node is
    smaller fails here, with the fix, instead of leaving the GPU task Pending.
    """
    from collections import namedtuple

    from pipelines.placement import check_fits, node_selector, tolerations

    check_fits(gpu_type, sized_for)
    placement = namedtuple("Placement", ["node_selector", "tolerations"])
    return placement(node_selector(gpu_type, spot), tolerations(spot))


def _configure(
    task: dsl.PipelineTask, key: str, retries: bool, resources: tuple[str, ...] | None = None
) -> dsl.PipelineTask:
    """Apply the per-task resources, retries (when `retries`), caching and pod settings.

    Pod settings: the NetworkPolicy's labels, a non-root security context, a timeout.
    """
    cpu_request, cpu_limit, memory_request, memory_limit = resources or RESOURCES[key]
    task.set_display_name(key.replace("-", "_"))
    for label, value in TASK_LABELS.items():
        kubernetes.add_pod_label(task, label, value)
    kubernetes.set_security_context(
        task, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, run_as_non_root=True
    )
    kubernetes.set_timeout(task, TIMEOUTS[key])
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
    task.set_memory_request(memory_request).set_memory_limit(memory_limit)
    if retries and key in RETRIES:
        count, backoff, factor, max_backoff = RETRIES[key]
        task.set_retry(count, backoff, factor, max_backoff)
    task.set_caching_options(enable_caching=CACHED[key])
    return task


def transfer_resources(gpu_type: str) -> tuple[str, str, str, str]:
    """train_transfer's (cpu request, cpu limit, memory request, memory limit) on `gpu_type`."""
    node = gpu_node(gpu_type)
    return node.cpu_request, node.cpu_limit, node.memory_request, node.memory_limit


def build_pipeline(
    cpu_image: str = DEFAULT_CPU_IMAGE,
    gpu_image: str = DEFAULT_GPU_IMAGE,
    retries: bool = True,
    gpu_type: str = DEFAULT_GPU_TYPE,
):
    """The pipeline function with its components built on the given images.

    `retries` False leaves out the retry policies: kfp.local honours them with their real
    backoff, so a local run that fails would otherwise wait minutes before it says so.
    `gpu_type` sizes train_transfer for that accelerator's node (pipelines.placement.GPU_NODES)
    and is the default of the run parameter of the same name.
    """
    sized_resources = transfer_resources(gpu_type)
    sized_for = gpu_type
    data_prep_op = data_prep_component.make(cpu_image)
    weights_op = weights_component.make(cpu_image)
    train_cnn_op = training_component.make(cpu_image, name="train-cnn")
    train_transfer_op = training_component.make(gpu_image, name="train-transfer")
    compare_op = compare_component.make(cpu_image)
    placement_op = dsl.component(gpu_placement, base_image=cpu_image, install_kfp_package=False)
    plan_cnn_op = dsl.component(plan_cnn_seeds, base_image=cpu_image, install_kfp_package=False)
    plan_op = dsl.component(plan_backbone_arms, base_image=cpu_image, install_kfp_package=False)

    def task(key: str, op, resources=None, **arguments) -> dsl.PipelineTask:
        """One task, with its resources, retries, caching and pod settings."""
        return _configure(op(**arguments), key, retries, resources)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fashion-MNIST: a small CNN from scratch against InceptionV3 transfer "
        "learning (cut at mixed7, frozen, Dense 1024 head), compared and champion-gated.",
    )
    def transfer_learning(
        store: str = DEFAULT_STORE,
        source: str = PREP["source"],
        dataset_name: str = PREP["dataset_name"],
        limit: int = PREP["limit"],
        val_fraction: float = PREP["val_fraction"],
        image_size: str = "auto",
        backbones: str = DEFAULT_BACKBONE,
        scratch: bool = False,
        seeds: int = 1,
        weights_url: str = WEIGHTS["weights_url"],
        weights_sha256: str = WEIGHTS["sha256"],
        weights_md5: str = WEIGHTS["md5"],
        cnn_input_size: int = CNN.default_input_size,
        transfer_input_size: int = 0,
        cnn_epochs: int = CNN.default_epochs,
        transfer_epochs: int = TRANSFER.default_epochs,
        batch_size: int = TRAIN["batch_size"],
        optimizer: str = TRAIN["optimizer"],
        cnn_learning_rate: float = CNN.default_learning_rate,
        cnn_label_smoothing: float = CNN.default_label_smoothing,
        cnn_mirror: str = "on" if CNN.default_mirror else "off",
        transfer_learning_rate: float = TRANSFER.default_learning_rate,
        augmentation: float = TRAIN["augmentation"],
        cut_layer: str = TRAIN["cut_layer"],
        fine_tune_from: str = TRAIN["fine_tune_from"],
        fine_tune_epochs: int = TRAIN["fine_tune_epochs"],
        fine_tune_learning_rate: float = TRAIN["fine_tune_learning_rate"],
        margin: float = COMPARE["margin"],
        seed: int = TRAIN["seed"],
        checkpoint_interval: float = TRAIN["checkpoint_interval"],
        gpu_type: str = gpu_type,
        gpu_count: str = "1",
        spot: bool = False,
    ) -> PipelineOutputs:
        """Compare a CNN from scratch with backbones trained from scratch and pretrained.

        store: gs://bucket/prefix (or a local folder in kfp.local) for datasets, weights,
            checkpoints and the champion file. limit: images per source split, 0 = all.
        image_size: photo folders only; "auto" keeps uniform sizes and centre-crops mixed ones
            to 150x150, "HxW" or "N" centre-crops every image to that size.
        weights_url: "default" (each backbone's official Keras file), a URL, gs:// URI or path
            (one backbone only), or "none": no pretrained arm, the backbones train from scratch.
            fine_tune_from: "" = no fine-tuning.
        backbones: comma-separated entries of components/common/backbones.py (inception_v3,
            resnet50_v2), each a parallel arm; cut_layer "" = each backbone's default cut;
            transfer_input_size 0 = each backbone's default input size.
        scratch: also train each backbone from random initialisation (the scratch arm, always
            run when weights_url is "none"). seeds: repeat every training with seeds seed,
            seed+1, ...; the report gives mean +- sd.
        checkpoint_interval: seconds between checkpoint uploads of both trainings, 0 = every
            epoch; not part of the result (nor of the checkpoint key). SIGTERM uploads the newest.
        source, weights_url: shown in the KFP UI and kept in its metadata store, so never put
            credentials in them (user:password@, signed query strings); see docs/SECURITY.md.
        gpu_type: GKE accelerator (node label cloud.google.com/gke-accelerator); its node must be
            at least as large as the one the pipeline was compiled for (compile --gpu-type).
            gpu_count: GPUs of train_transfer, a string ("1"): KFP 2.17 resolves only string
            parameters in resource fields. spot: run the GPU step on spot nodes.
        """
        prep = task(
            "data-prep",
            data_prep_op,
            store=store,
            source=source,
            dataset_name=dataset_name,
            limit=limit,
            val_fraction=val_fraction,
            seed=seed,
            image_size=image_size,
        )
        planned = task(
            "plan-backbone-arms",
            plan_op,
            dataset_uri=prep.outputs["dataset_uri"],
            backbones=backbones,
            seeds=seeds,
            seed=seed,
            scratch=scratch,
            weights_url=weights_url,
            weights_sha256=weights_sha256,
            weights_md5=weights_md5,
        )
        cnn_runs = task(
            "plan-cnn-seeds",
            plan_cnn_op,
            dataset_uri=prep.outputs["dataset_uri"],
            seeds=seeds,
            seed=seed,
        )
        shared = {
            "store": store,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "augmentation": augmentation,
            "checkpoint_interval": checkpoint_interval,
        }
        with dsl.ParallelFor(cnn_runs.output) as cnn_run:
            cnn = task(
                "train-cnn",
                train_cnn_op,
                model=SEED_CNN,
                input_size=cnn_input_size,
                epochs=cnn_epochs,
                learning_rate=cnn_learning_rate,
                label_smoothing=cnn_label_smoothing,
                mirror=cnn_mirror,
                seed=cnn_run.seed,
                dataset_uri=cnn_run.dataset_uri,
                **shared,
            )
        placement = task(
            "gpu-placement", placement_op, gpu_type=gpu_type, spot=spot, sized_for=sized_for
        )
        with dsl.ParallelFor(planned.output) as arm:
            fetched = task(
                "weights",
                weights_op,
                store=store,
                weights_url=arm.weights_url,
                sha256=arm.weights_sha256,
                md5=arm.weights_md5,
                backbone=arm.backbone,
            )
            transfer = task(
                "train-transfer",
                train_transfer_op,
                model=arm.backbone,
                weights_uri=fetched.outputs["weights_uri"],
                scratch=arm.scratch,
                input_size=transfer_input_size,
                epochs=transfer_epochs,
                learning_rate=transfer_learning_rate,
                cut_layer=cut_layer,
                fine_tune_from=fine_tune_from,
                fine_tune_epochs=fine_tune_epochs,
                fine_tune_learning_rate=fine_tune_learning_rate,
                seed=arm.seed,
                dataset_uri=arm.dataset_uri,
                **shared,
                resources=sized_resources,
            )
            kubernetes.empty_dir_mount(
                transfer,
                volume_name=SCRATCH_VOLUME,
                mount_path=SCRATCH_PATH,
                size_limit=SCRATCH_SIZE,
            )
            transfer.set_env_variable(training_component.SCRATCH_ENV, SCRATCH_PATH)
            transfer.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpu_count)
            # kfp 2.17 turns gpu_count into a placeholder without making it an input of the
            # task; inside a ParallelFor the loop's DAG must receive it, or the backend's driver
            # (and kfp.local) cannot resolve it.
            transfer.register_pipeline_channels([gpu_count])
            kubernetes.add_node_selector_json(transfer, placement.outputs["node_selector"])
            kubernetes.add_toleration(
                transfer, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
            )
            kubernetes.add_toleration_json(transfer, placement.outputs["tolerations"])
        compared = task(
            "compare",
            compare_op,
            cnn_models=dsl.Collected(cnn.outputs["trained_model"]),
            backbone_models=dsl.Collected(transfer.outputs["trained_model"]),
            store=store,
            dataset_name=dataset_name,
            margin=margin,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        return PipelineOutputs(
            compared.outputs["report"], compared.outputs["summary"], compared.outputs["metrics"]
        )

    return transfer_learning
