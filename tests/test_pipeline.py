"""The compiled pipeline (IR YAML), its CLI arguments, placement, and the KFP client calls."""

from __future__ import annotations

import json
import os
import re
import types
import typing
from pathlib import Path

import pytest
import yaml
from kfp import components

from components.common.backbones import DEFAULT_BACKBONE
from components.training.models import MODELS
from pipelines import placement, profiles, remote
from pipelines.cli import arguments_from, main, parse_args
from pipelines.pipeline import (
    CACHED,
    RESOURCES,
    RETRIES,
    SCRATCH_PATH,
    SCRATCH_SIZE,
    TASK_LABELS,
    TIMEOUTS,
    build_pipeline,
)

CPU_IMAGE = "registry.example/tl-cpu:abc"
GPU_IMAGE = "registry.example/tl-gpu:abc"
STORE = "gs://bucket/tl"
IMAGES = ["--cpu-image", CPU_IMAGE, "--gpu-image", GPU_IMAGE]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict, dict]:
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    code = main(["compile", "--output", str(path), *IMAGES, "--store", STORE])
    assert code == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    return path, spec, platform


def tasks(spec: dict) -> dict:
    """Every task by name: the root DAG's and those inside its ParallelFor loops."""
    found = dict(spec["root"]["dag"]["tasks"])
    for name, component in spec["components"].items():
        if name.startswith("comp-for-loop-"):
            found.update(component["dag"]["tasks"])
    return {name: task for name, task in found.items() if not name.startswith("for-loop-")}


def loops(spec: dict) -> dict:
    """for-loop task name -> (its root DAG task, the names of the tasks it runs)."""
    root = spec["root"]["dag"]["tasks"]
    return {
        name: (task, set(spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]))
        for name, task in root.items()
        if name.startswith("for-loop-")
    }


def executor(spec: dict, task: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


def test_yaml_loads_back_into_kfp(compiled):
    path, spec, _ = compiled
    component = components.load_component_from_file(str(path))
    assert component.name == "transfer-learning"
    assert spec["pipelineInfo"]["name"] == "transfer-learning"
    assert set(component.component_spec.outputs) == {"report", "summary", "metrics"}


def test_dag_order(compiled):
    _, spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    dependencies = {name: set(task.get("dependentTasks", [])) for name, task in root.items()}
    found = loops(spec)
    cnn_loop = next(name for name, (_, inner) in found.items() if inner == {"train-cnn"})
    arm_loop = next(name for name, (_, inner) in found.items() if "train-transfer" in inner)
    assert found[arm_loop][1] == {"weights", "train-transfer"}
    assert dependencies == {
        "data-prep": set(),
        "plan-cnn-seeds": {"data-prep"},
        "plan-backbone-arms": {"data-prep"},
        "gpu-placement": set(),
        cnn_loop: {"plan-cnn-seeds"},
        arm_loop: {"plan-backbone-arms", "gpu-placement"},
        "compare": {cnn_loop, arm_loop},
    }
    # Each loop iterates over its plan task's list: the CNN's seeds, the backbone arms.
    for loop, producer in ((cnn_loop, "plan-cnn-seeds"), (arm_loop, "plan-backbone-arms")):
        iterator = found[loop][0]["parameterIterator"]
        channel = iterator["items"]["inputParameter"]
        source = found[loop][0]["inputs"]["parameters"][channel]["taskOutputParameter"]
        assert source == {"producerTask": producer, "outputParameterKey": "Output"}
    inner = tasks(spec)
    assert inner["train-transfer"]["dependentTasks"] == ["weights"]
    transfer_inputs = inner["train-transfer"]["inputs"]["parameters"]
    assert transfer_inputs["weights_uri"]["taskOutputParameter"]["producerTask"] == "weights"
    # The loops' items carry the dataset URI (kfp.local replaces any other task output passed
    # into a loop by the loop item), so the trainings take it from their item.
    for name in ("model", "seed", "scratch", "dataset_uri"):
        assert "loop-item" in transfer_inputs[name]["componentInputParameter"]
    for name in ("seed", "dataset_uri"):
        assert (
            "loop-item"
            in inner["train-cnn"]["inputs"]["parameters"][name]["componentInputParameter"]
        )
    for plan in ("plan-cnn-seeds", "plan-backbone-arms"):
        dataset = root[plan]["inputs"]["parameters"]["dataset_uri"]["taskOutputParameter"]
        assert dataset == {"producerTask": "data-prep", "outputParameterKey": "dataset_uri"}
    plans = root["plan-backbone-arms"]["inputs"]["parameters"]
    for name in ("backbones", "seeds", "seed", "scratch", "weights_url"):
        assert plans[name] == {"componentInputParameter": name}
    assert root["plan-cnn-seeds"]["inputs"]["parameters"]["seeds"] == {
        "componentInputParameter": "seeds"
    }
    # compare collects every trained model of both loops (dsl.Collected: artifact lists).
    compare_inputs = root["compare"]["inputs"]["artifacts"]
    producers = {n: a["taskOutputArtifact"]["producerTask"] for n, a in compare_inputs.items()}
    assert producers == {"cnn_models": cnn_loop, "backbone_models": arm_loop}
    compare_spec = spec["components"]["comp-compare"]["inputDefinitions"]["artifacts"]
    assert all(compare_spec[name]["isArtifactList"] for name in compare_inputs)


def test_images_are_a_compile_time_setting(compiled):
    _, spec, _ = compiled
    images = {name: executor(spec, name)["image"] for name in tasks(spec)}
    assert images.pop("train-transfer") == GPU_IMAGE
    assert set(images.values()) == {CPU_IMAGE}
    # Lightweight components on the project image: no pip install of kfp at run time.
    for name in tasks(spec):
        assert "pip install" not in " ".join(executor(spec, name)["command"])


def test_gpu_resources_node_selector_and_tolerations(compiled):
    _, spec, platform = compiled
    accelerator = executor(spec, "train-transfer")["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpu_count']}}"
    for name in ("train-cnn", "data-prep", "weights", "compare"):
        assert "accelerator" not in executor(spec, name)["resources"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == {f"exec-{name}" for name in tasks(spec)}
    for name in ("train-cnn", "data-prep", "weights", "compare"):
        assert "nodeSelector" not in k8s[f"exec-{name}"]
    transfer = k8s["exec-train-transfer"]
    # train-transfer runs in the arms' ParallelFor: the placement reaches it as a loop input.
    (arm_loop,) = [task for task, inner in loops(spec).values() if "train-transfer" in inner]
    loop_inputs = arm_loop["inputs"]["parameters"]
    channel = transfer["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
    selector = loop_inputs[channel]["taskOutputParameter"]
    assert selector == {"producerTask": "gpu-placement", "outputParameterKey": "node_selector"}
    static, from_placement = transfer["tolerations"]
    assert static == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    channel = from_placement["tolerationJson"]["componentInputParameter"]
    assert loop_inputs[channel]["taskOutputParameter"] == {
        "producerTask": "gpu-placement",
        "outputParameterKey": "tolerations",
    }
    placement_inputs = tasks(spec)["gpu-placement"]["inputs"]["parameters"]
    assert placement_inputs["gpu_type"] == {"componentInputParameter": "gpu_type"}
    assert placement_inputs["spot"] == {"componentInputParameter": "spot"}
    assert placement_inputs["sized_for"]["runtimeValue"]["constant"] == "nvidia-l4"


PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['pipelinechannel--(\w+)'\]\}\}")


def resource_fields(resources: dict) -> dict[str, object]:
    """Every field of an executor's resources, the accelerator's flattened in."""
    fields = {key: value for key, value in resources.items() if key != "accelerator"}
    for key, value in resources.get("accelerator", {}).items():
        fields[f"accelerator.{key}"] = value
    return fields


def test_resource_fields_are_literals_or_string_parameters(compiled):
    # KFP 2.17's driver resolves a placeholder in a resource field with the parameter's string
    # accessor (resolvePodSpecInputRuntimeParameter, backend/src/v2/driver/resolve.go): a NUMBER
    # parameter resolves to "" and the limit is dropped without an error. So every placeholder
    # must name a STRING pipeline parameter, or the field must be a literal.
    _, spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    placeholders = 0
    for name in tasks(spec):
        task_inputs = tasks(spec)[name].get("inputs", {}).get("parameters", {})
        for field, value in resource_fields(executor(spec, name)["resources"]).items():
            for channel in PLACEHOLDER.findall(str(value)):
                placeholders += 1
                assert PLACEHOLDER.fullmatch(str(value)), (name, field, value)
                source = task_inputs[f"pipelinechannel--{channel}"]["componentInputParameter"]
                # In a ParallelFor the loop passes the pipeline parameter on under its channel.
                source = source.removeprefix("pipelinechannel--")
                assert parameters[source]["parameterType"] == "STRING", (name, field, source)
    assert placeholders == 1  # the GPU count
    assert parameters["gpu_count"]["defaultValue"] == "1"


def test_a_number_gpu_count_is_refused_by_the_rule(tmp_path):
    # The same rule on a pipeline with an integer count (what the driver would drop).
    from kfp import compiler, dsl

    step = components.load_component_from_text(
        "name: step\nimplementation:\n  container:\n    image: python:3.11\n    command: [x]\n"
    )

    def int_count(count=1):
        step().set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(count)

    int_count.__annotations__ = {"count": int}  # this module's annotations are strings
    int_count = dsl.pipeline(name="int-count")(int_count)
    path = tmp_path / "int.yaml"
    compiler.Compiler().compile(int_count, str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    (value,) = [v for v in resource_fields(executor(spec, "step")["resources"]).values()
                if PLACEHOLDER.search(str(v))]  # fmt: skip
    channel = PLACEHOLDER.fullmatch(value).group(1)
    assert spec["root"]["inputDefinitions"]["parameters"][channel]["parameterType"] != "STRING"


def test_training_component_works_in_the_scratch_volume(tmp_path, monkeypatch):
    import tempfile

    from components.training import component as training_component

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # restored after the test
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(training_component.SCRATCH_ENV, str(scratch))
    with pytest.raises(Exception):  # noqa: B017 - no dataset there; only the temp folder matters
        training_component.train(
            None, None, None, None, dataset_uri=str(tmp_path / "no-dataset"), store=str(tmp_path)
        )
    assert tempfile.gettempdir() == str(scratch)
    assert Path(os.environ["TMPDIR"]) == scratch
    assert not list(scratch.iterdir())  # the work folder lived there and was cleaned up


def test_transfer_scratch_volume_and_tmpdir(compiled):
    _, spec, platform = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (scratch,) = k8s["exec-train-transfer"]["emptyDirMounts"]
    assert scratch == {
        "volumeName": "scratch",
        "mountPath": SCRATCH_PATH,
        "sizeLimit": SCRATCH_SIZE,
    }
    env = {item["name"]: item["value"] for item in executor(spec, "train-transfer")["env"]}
    assert env["TL_SCRATCH_DIR"] == SCRATCH_PATH  # the component's TMPDIR when mounted
    # The size holds the full dataset's feature cache at the default input size, with room.
    size = spec["root"]["inputDefinitions"]["parameters"]["transfer_input_size"]["defaultValue"]
    assert size == 0  # the backbone's default size
    size = MODELS[DEFAULT_BACKBONE].default_input_size
    grid = size  # InceptionV3's valid convolutions and stride-2 reductions up to mixed7
    for step in ("s2", "valid", "s2", "valid", "s2", "s2"):
        grid = (grid - 3) // 2 + 1 if step == "s2" else grid - 2
    assert grid == 7 if size == 150 else grid > 0
    cache = 70_000 * grid * grid * 768 * 2  # Fashion-MNIST train + test, float16
    assert cache * 3 < int(SCRATCH_SIZE.removesuffix("Gi")) * 2**30
    script = (Path(__file__).parents[1] / "k8s" / "gke" / "create-cluster.sh").read_text()
    disk = int(re.search(r"GPU_DISK_SIZE=\$\{GPU_DISK_SIZE:-(\d+)\}", script).group(1))
    assert disk >= 2 * int(SCRATCH_SIZE.removesuffix("Gi"))  # images, logs and the scratch


def test_every_task_pod_is_labelled_non_root_and_timed_out(compiled):
    _, spec, platform = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in tasks(spec):
        config = k8s[f"exec-{name}"]
        assert config["podMetadata"]["labels"] == TASK_LABELS
        assert config["securityContext"] == {
            "runAsUser": "10001",
            "runAsGroup": "10001",
            "runAsNonRoot": True,
        }
        assert int(config["activeDeadlineSeconds"]) == TIMEOUTS[name] > 0


def test_placement_values():
    assert placement.node_selector("nvidia-l4", spot=False) == {
        "cloud.google.com/gke-accelerator": "nvidia-l4"
    }
    assert placement.node_selector("nvidia-tesla-t4", spot=True) == {
        "cloud.google.com/gke-accelerator": "nvidia-tesla-t4",
        "cloud.google.com/gke-spot": "true",
    }
    assert placement.tolerations(False) == [placement.GPU_TOLERATION]
    assert placement.tolerations(True) == [placement.GPU_TOLERATION, placement.SPOT_TOLERATION]
    assert placement.SPOT_TOLERATION["key"] == "cloud.google.com/gke-spot"
    with pytest.raises(ValueError, match="gpu_type"):
        placement.node_selector("", spot=False)


def assert_resources(resources: dict, row: tuple[str, str, str, str]) -> None:
    cpu_request, cpu_limit, memory_request, memory_limit = row
    assert resources["resourceCpuRequest"] == cpu_request
    assert resources["resourceCpuLimit"] == cpu_limit
    assert resources["resourceMemoryRequest"] == memory_request
    assert resources["resourceMemoryLimit"] == memory_limit


def test_resource_requests_and_limits(compiled):
    _, spec, _ = compiled
    for name, row in RESOURCES.items():
        assert_resources(executor(spec, name)["resources"], row)
    node = placement.GPU_NODES["nvidia-l4"]
    transfer = executor(spec, "train-transfer")["resources"]
    assert_resources(
        transfer, (node.cpu_request, node.cpu_limit, node.memory_request, node.memory_limit)
    )


def gib(quantity: str) -> float:
    return float(quantity.removesuffix("Gi"))


@pytest.mark.parametrize("gpu_type", sorted(placement.GPU_NODES))
def test_gpu_task_fits_the_allocatable_of_its_node(gpu_type):
    node = placement.GPU_NODES[gpu_type]
    # GKE's reservation formula (docs/operations.md), from the machine's memory and cores.
    machines = {"g2-standard-8": (8, 32), "n1-standard-8": (8, 30), "a2-highgpu-1g": (12, 85),
                "a3-highgpu-1g": (26, 234)}  # fmt: skip
    cores, memory = machines[node.machine_type]
    bands = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02)]
    reserved, left = 0.0, memory
    for size, rate in bands:
        reserved += min(left, size) * rate
        left = max(0.0, left - size)
    allocatable_memory = memory - reserved - 100 / 1024
    cpu_bands = [(1, 0.06), (1, 0.01), (2, 0.005), (float("inf"), 0.0025)]
    cpu_reserved, left = 0.0, cores
    for size, rate in cpu_bands:
        cpu_reserved += min(left, size) * rate
        left = max(0.0, left - size)
    assert node.allocatable_memory_gib == pytest.approx(allocatable_memory, abs=0.1)
    assert node.allocatable_cpu == pytest.approx(cores - cpu_reserved, abs=0.01)
    # Room for GKE's daemonsets: at least 0.5 CPU and 2 GiB below allocatable.
    assert float(node.cpu_limit) <= node.allocatable_cpu - 0.5
    assert gib(node.memory_limit) <= node.allocatable_memory_gib - 2
    assert float(node.cpu_request) <= float(node.cpu_limit)
    assert gib(node.memory_request) <= gib(node.memory_limit)


def test_compile_time_gpu_type_sizes_the_gpu_task(tmp_path):
    path = tmp_path / "a100.yaml"
    argv = ["compile", "--output", str(path), *IMAGES, "--store", STORE]
    assert main([*argv, "--gpu-type", "nvidia-tesla-a100"]) == 0
    spec = next(yaml.safe_load_all(path.read_text()))
    node = placement.GPU_NODES["nvidia-tesla-a100"]
    assert executor(spec, "train-transfer")["resources"]["resourceMemoryLimit"] == (
        node.memory_limit
    )
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["gpu_type"]["defaultValue"] == "nvidia-tesla-a100"
    placement_inputs = tasks(spec)["gpu-placement"]["inputs"]["parameters"]
    assert placement_inputs["sized_for"]["runtimeValue"]["constant"] == "nvidia-tesla-a100"


def test_run_time_gpu_type_must_fit_the_compiled_sizing():
    placement.check_fits("nvidia-tesla-a100", "nvidia-l4")  # a bigger node: fine
    placement.check_fits("nvidia-l4", "nvidia-l4")
    placement.check_fits("nvidia-tesla-t4", "nvidia-l4")  # L4's sizing fits n1-standard-8
    with pytest.raises(ValueError, match="compile it with --gpu-type nvidia-l4"):
        placement.check_fits("nvidia-l4", "nvidia-tesla-a100")
    with pytest.raises(ValueError, match="not supported"):
        placement.check_fits("nvidia-tesla-k80", "nvidia-l4")


def test_compile_refuses_placeholders_unless_allowed(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(path), "--store", STORE]) == 1
    err = capsys.readouterr().err
    assert "--cpu-image us-docker.pkg.dev/my-project/" in err and "placeholder" in err
    assert not path.exists()
    assert main(["compile", "--output", str(path), *IMAGES]) == 1
    assert "store gs://my-project-tl-store/pipeline is a placeholder" in capsys.readouterr().err
    untagged = ["--cpu-image", "r.example/tl-cpu", "--gpu-image", GPU_IMAGE, "--store", STORE]
    assert main(["compile", "--output", str(path), *untagged]) == 1
    assert "has no tag or digest" in capsys.readouterr().err
    assert main(["compile", "--output", str(path), "--allow-placeholders"]) == 0
    digest = "r.example/tl-gpu@sha256:" + "a" * 64
    pinned = ["--cpu-image", CPU_IMAGE, "--gpu-image", digest, "--store", STORE]
    assert main(["compile", "--output", str(path), *pinned]) == 0
    assert digest in path.read_text()


def test_retries_with_backoff(compiled):
    _, spec, _ = compiled
    for name, (retries, backoff, factor, max_backoff) in RETRIES.items():
        policy = tasks(spec)[name]["retryPolicy"]
        assert policy == {
            "maxRetryCount": retries,
            "backoffDuration": backoff,
            "backoffFactor": factor,
            "backoffMaxDuration": max_backoff,
        }
    assert {"data-prep", "weights", "train-cnn", "train-transfer"} <= set(RETRIES)


def test_caching_ingest_off_training_on(compiled):
    _, spec, _ = compiled
    for name, cached in CACHED.items():
        assert tasks(spec)[name]["cachingOptions"].get("enableCache", False) is cached, name
    assert not CACHED["data-prep"] and not CACHED["weights"] and not CACHED["compare"]
    assert CACHED["train-cnn"] and CACHED["train-transfer"]
    # Training is keyed on content: it takes the content-addressed URIs as parameters, not the
    # ingest steps' artifacts (whose identity changes with every uncached run).
    for name in ("train-cnn", "train-transfer"):
        assert "artifacts" not in tasks(spec)[name].get("inputs", {})


def test_every_knob_has_a_default(compiled):
    _, spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    expected = {
        "store", "source", "dataset_name", "limit", "weights_url", "weights_sha256",
        "cnn_input_size", "transfer_input_size", "cnn_epochs", "transfer_epochs", "batch_size",
        "cnn_learning_rate", "transfer_learning_rate", "fine_tune_learning_rate", "augmentation",
        "cut_layer", "fine_tune_from", "seed", "gpu_type", "gpu_count", "spot",
    }  # fmt: skip
    assert expected <= set(parameters)
    assert all("defaultValue" in parameter for parameter in parameters.values())
    assert parameters["cut_layer"]["defaultValue"] == ""  # the backbone's default cut
    assert parameters["backbones"]["defaultValue"] == "inception_v3"
    assert parameters["scratch"]["defaultValue"] is False
    assert parameters["seeds"]["defaultValue"] == 1
    assert parameters["gpu_type"]["defaultValue"] == "nvidia-l4"
    assert parameters["spot"]["defaultValue"] is False
    assert parameters["transfer_input_size"]["defaultValue"] == 0  # each backbone's default


def test_compile_bakes_store_and_params_into_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    argv = ["compile", "--output", str(path), *IMAGES, "--store", "gs://bucket/prefix"]
    assert main([*argv, "--param", "spot=true", "--param", "cnn_epochs=3"]) == 0
    spec = yaml.safe_load_all(path.read_text()).__next__()
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["store"]["defaultValue"] == "gs://bucket/prefix"
    assert parameters["spot"]["defaultValue"] is True
    assert parameters["cnn_epochs"]["defaultValue"] == 3


def test_run_arguments_profile_shortcuts_and_params(tmp_path):
    pipeline = build_pipeline()
    args = parse_args(
        ["run", "--store", str(tmp_path / "s"), "--weights", "none", "--epochs", "1",
         "--param", "seed=7"]
    )  # fmt: skip
    arguments = arguments_from(args, pipeline)
    assert arguments["store"] == str((tmp_path / "s").resolve())
    assert arguments["weights_url"] == "none"
    assert arguments["cnn_epochs"] == arguments["transfer_epochs"] == 1
    assert arguments["seed"] == 7
    assert arguments["limit"] == profiles.PROFILES["quick"]["limit"]
    assert "source" not in arguments  # unset flags keep the pipeline's defaults
    full = arguments_from(parse_args(["run", "--profile", "full"]), pipeline)
    assert "limit" not in full and "transfer_input_size" not in full


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("nope=1", "unknown parameter"),
        ("seed=abc", "expected an integer"),
        ("spot=maybe", "expected true or false"),
        ("seed", "key=value"),
    ],
)
def test_bad_params_are_clear_errors(pair, message, capsys):
    assert main(["compile", "--output", "/dev/null", "--param", pair]) == 1
    assert message in capsys.readouterr().err


def test_docker_runner_mounts_the_local_store(tmp_path, monkeypatch):
    from pipelines.local import docker_runner_args

    keras_home = tmp_path / "keras"
    keras_home.mkdir()
    args = docker_runner_args(str(tmp_path / "store"), keras_home=str(keras_home))
    mounts = {mount["Target"]: mount for mount in args["mounts"]}
    store = str((tmp_path / "store").resolve())
    assert mounts[store]["Source"] == store and mounts[store]["Type"] == "bind"
    assert mounts["/keras"]["ReadOnly"] is True
    assert args["environment"]["KERAS_HOME"] == "/keras"
    assert args["network_mode"] == "host"
    gcs = docker_runner_args("gs://bucket/prefix", keras_home=str(tmp_path / "missing"))
    assert gcs["mounts"] == []
    # kfp.local accepts exactly these `docker run` arguments.
    from kfp import local

    runner = local.DockerRunner(**args)
    assert runner.container_run_args["user"] == args["user"]


def test_failure_cause_is_the_last_exception_line():
    from pipelines.local import failure_cause

    lines = [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "    components.common.dataset.DataError: /data: source not found",
        "",
        "\x1b[91mERROR\x1b[0m - Task 'data-prep' finished with status FAILURE",
    ]
    assert failure_cause(lines) == "components.common.dataset.DataError: /data: source not found"
    assert failure_cause(["all fine"]) is None


# --- submit / schedule / runs against a stand-in for kfp.Client -----------------------------


class FakeClient:
    """Records calls; answers like kfp.Client (objects with the same attribute names)."""

    def __init__(self, existing_pipeline: str | None = None):
        self.existing = existing_pipeline
        self.calls: list[tuple[str, dict]] = []

    def _record(self, call, **kwargs):
        self.calls.append((call, kwargs))

    def get_pipeline_id(self, name):
        self._record("get_pipeline_id", name=name)
        return self.existing

    def upload_pipeline(self, **kwargs):
        self._record("upload_pipeline", **kwargs)
        return types.SimpleNamespace(pipeline_id="p-1")

    def list_pipeline_versions(self, **kwargs):
        self._record("list_pipeline_versions", **kwargs)
        version = types.SimpleNamespace(pipeline_version_id="v-1", display_name="first")
        return types.SimpleNamespace(pipeline_versions=[version])

    def upload_pipeline_version(self, **kwargs):
        self._record("upload_pipeline_version", **kwargs)
        return types.SimpleNamespace(pipeline_version_id="v-2")

    def create_experiment(self, name):
        self._record("create_experiment", name=name)
        return types.SimpleNamespace(experiment_id="e-1")

    def run_pipeline(self, **kwargs):
        self._record("run_pipeline", **kwargs)
        return types.SimpleNamespace(run_id="r-1")

    def create_recurring_run(self, **kwargs):
        self._record("create_recurring_run", **kwargs)
        return types.SimpleNamespace(recurring_run_id="rr-1")

    def get_experiment(self, experiment_name):
        return types.SimpleNamespace(experiment_id="e-1")

    def list_runs(self, **kwargs):
        self._record("list_runs", **kwargs)
        run = types.SimpleNamespace(
            run_id="r-1", display_name="nightly", state="SUCCEEDED", created_at="2026-01-01",
            finished_at="2026-01-01",
        )  # fmt: skip
        return types.SimpleNamespace(runs=[run])

    def named(self, name):
        return [kwargs for call, kwargs in self.calls if call == name]


def test_submit_creates_the_pipeline_then_runs_it():
    client = FakeClient()
    uploaded = remote.upload(client, "p.yaml", "transfer-learning")
    assert uploaded == remote.Uploaded("p-1", "v-1", "first", True)
    run_id = remote.submit(client, uploaded, experiment="exp", run_name="n", params={"seed": 1})
    assert run_id == "r-1"
    (run,) = client.named("run_pipeline")
    assert run == {
        "experiment_id": "e-1",
        "job_name": "n",
        "pipeline_id": "p-1",
        "version_id": "v-1",
        "params": {"seed": 1},
        "service_account": remote.DEFAULT_SERVICE_ACCOUNT,
    }
    assert remote.run_url("http://kfp:8080/", run_id) == "http://kfp:8080/#/runs/details/r-1"


def test_submit_adds_a_version_to_an_existing_pipeline():
    client = FakeClient(existing_pipeline="p-9")
    uploaded = remote.upload(client, "p.yaml", "transfer-learning")
    assert uploaded.pipeline_id == "p-9" and uploaded.version_id == "v-2"
    assert not uploaded.created_pipeline and not client.named("upload_pipeline")
    (version,) = client.named("upload_pipeline_version")
    assert version["pipeline_id"] == "p-9"
    assert version["pipeline_version_name"].startswith("transfer-learning-")


def test_schedule_is_cron_max_concurrency_one_no_catchup():
    client = FakeClient(existing_pipeline="p-9")
    uploaded = remote.upload(client, "p.yaml", "transfer-learning")
    recurring = remote.schedule(
        client, uploaded, experiment="exp", name="weekly", cron="0 3 * * 1", params={}
    )
    assert recurring == "rr-1"
    (call,) = client.named("create_recurring_run")
    assert call["cron_expression"] == "0 0 3 * * 1"
    assert call["max_concurrency"] == 1
    assert call["no_catchup"] is True
    assert call["version_id"] == "v-2"
    with pytest.raises(ValueError, match="5 or 6 fields"):
        remote.kfp_cron("* * *")


def test_runs_lists_newest_first():
    client = FakeClient()
    runs = remote.list_runs(client, experiment="exp", limit=5)
    assert runs[0]["state"] == "SUCCEEDED"
    (call,) = client.named("list_runs")
    assert call == {"page_size": 5, "sort_by": "created_at desc", "experiment_id": "e-1"}
    table = remote.format_runs(runs)
    assert "SUCCEEDED" in table and "nightly" in table and table.startswith("STATE")


def test_submit_cli_to_an_unreachable_endpoint_is_one_clear_error(capsys, tmp_path):
    from tests.conftest import free_port

    host = f"http://127.0.0.1:{free_port()}"
    code = main(["runs", "--host", host])
    assert code == 1
    assert f"cannot reach KFP at {host}" in capsys.readouterr().err


def test_metrics_are_written_as_json(tmp_path):
    from components.common.artifacts import log_metrics

    class Metrics:
        path = str(tmp_path / "m" / "metrics")
        logged: typing.ClassVar[dict] = {}

        def log_metric(self, name, value):
            self.logged[name] = value

    metrics = Metrics()
    logged = log_metrics(metrics, {"a": 1.5, "b": True, "c": None, "d": float("nan"), "e": "x"})
    assert logged == {"a": 1.5, "b": 1} == metrics.logged
    assert json.loads(Path(metrics.path).read_text()) == logged


def test_docker_without_an_engine_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert main(["run", "--docker", "--store", str(tmp_path / "store")]) == 1
    assert "--docker needs a running Docker engine" in capsys.readouterr().err


def test_local_build_leaves_out_retries_only(tmp_path):
    from kfp import compiler

    path = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(retries=False), str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    assert all("retryPolicy" not in task for task in tasks(spec).values())
    assert tasks(spec)["train-cnn"]["cachingOptions"] == {"enableCache": True}


def test_every_input_a_loop_uses_is_declared_by_the_loop(tmp_path):
    """The backend's driver resolves a task's componentInputParameter from its parent DAG's
    inputs: inside a ParallelFor every one (gpu_count's placeholder too) must be declared by the
    loop's component and passed by the task that runs the loop."""
    from kfp import compiler

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(), str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    assert "accelerator" in executor(spec, "train-transfer")["resources"]
    loops = {name: c for name, c in spec["components"].items() if name.startswith("comp-for-loop")}
    assert loops
    for name, component in loops.items():
        declared = set(component.get("inputDefinitions", {}).get("parameters", {}))
        for task_name, task in component["dag"]["tasks"].items():
            for given in task.get("inputs", {}).get("parameters", {}).values():
                if "componentInputParameter" in given:
                    assert given["componentInputParameter"] in declared, (name, task_name)
    assert "pipelinechannel--gpu_count" in set(
        loops["comp-for-loop-2"]["inputDefinitions"]["parameters"]
    )
