"""The images for real (make check-images): `make local` end to end, failing tasks, GPU image.

These tests need a Docker engine and the built images, named by the environment variables that
docker/check-images.sh sets (TL_CPU_IMAGE, TL_GPU_IMAGE); without them they skip, so `make test`
never needs Docker. They prove, in the containers themselves:
- `make local` runs the whole pipeline in the images and leaves the report, summary and metrics
  in the host store, owned by the caller, and the report renders in headless Chromium;
- every container ran non-root, on a read-only root filesystem, with no_new_privs, and /tmp
  writable (each task's own record, pipelines.container_task);
- a task that fails, also one that writes its outputs first, fails the run naming the task, its
  exit code and its log, whatever kfp.local reports;
- the GPU image imports TensorFlow and holds the CUDA and cuDNN libraries TensorFlow was built
  for (no GPU here: the libraries are checked as files, and no GPU is claimed).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_IMAGE = os.environ.get("TL_CPU_IMAGE", "")
GPU_IMAGE = os.environ.get("TL_GPU_IMAGE", "")
pytestmark = pytest.mark.skipif(
    not CPU_IMAGE, reason="needs the built images: make check-images sets TL_CPU_IMAGE"
)


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def records(run_dir: Path) -> dict[str, dict]:
    """Each task's record (task-exit.json) in a kfp.local run folder, by task name."""
    return {
        path.parent.name: json.loads(path.read_text())
        for path in sorted(run_dir.rglob("task-exit.json"))  # loop iterations' tasks too
    }


# --- make local end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`make local` on the images, quick profile, no pretrained weights, SOURCE=auto."""
    store = tmp_path_factory.mktemp("local") / "store"
    gpu_image = os.environ.get("TL_LOCAL_GPU_IMAGE") or CPU_IMAGE
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "local",
            f"CPU_IMAGE={CPU_IMAGE}",
            f"GPU_IMAGE={gpu_image}",
            f"STORE={store}",
            "WEIGHTS=none",
            f"VENV={Path(sys.executable).parent.parent}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
        check=False,
    )
    return result, store


def test_make_local_runs_the_pipeline_in_the_images(local_run):
    result, store = local_run
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    report = re.search(r"^Report \(HTML\):\s+(\S+)$", result.stdout, re.MULTILINE)
    assert report, result.stdout[-2000:]
    report_html = Path(report.group(1))
    assert report_html.is_relative_to(store) and report_html.is_file()
    run_dir = report_html.parent
    for name in ("report.html", "summary.md", "metrics.json"):
        assert (run_dir / name).stat().st_size > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics, "metrics.json is empty"
    # SOURCE=auto resolved on the host: the Debian files when installed, mounted read-only.
    prep_log = (run_dir / "data-prep" / "task.log").read_text()
    debian = "/usr/share/datasets/fashion-mnist"
    if Path(debian, "train-images-idx3-ubyte.gz").is_file():
        assert debian in prep_log and "fashion-mnist.s3" not in prep_log


def test_every_container_was_hardened(local_run):
    result, store = local_run
    assert result.returncode == 0
    (run_dir,) = [path for path in (store / "local-runs").iterdir() if path.is_dir()]
    tasks = records(run_dir)
    assert set(tasks) >= {"data-prep", "weights", "train-cnn", "train-transfer", "compare"}
    expected_uid = 10001 if os.getuid() == 0 else os.getuid()
    for name, record in tasks.items():
        assert record["exit_code"] == 0, name
        assert record["hardening"] == {
            "uid": expected_uid,
            "gid": 10001 if os.getuid() == 0 else os.getgid(),
            "root_read_only": True,
            "no_new_privs": True,
            "tmp_writable": True,
        }, name


def test_outputs_belong_to_the_caller(local_run):
    result, store = local_run
    assert result.returncode == 0
    strangers = [
        str(path)
        for path in [store, *store.rglob("*")]
        if path.lstat().st_uid != os.getuid() or path.lstat().st_gid != os.getgid()
    ]
    assert strangers == []


def test_the_report_renders_in_headless_chromium(local_run, tmp_path):
    from tests.chromium import CHROMIUM, page_errors, render

    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium package")
    result, _ = local_run
    report = Path(re.search(r"^Report \(HTML\):\s+(\S+)$", result.stdout, re.MULTILINE)[1])
    page = render(report.resolve().as_uri(), tmp_path)
    assert page_errors(page.events) == []
    assert page.images and all(done and width > 100 for done, width, _ in page.images)
    assert page.headline.strip()


# --- failing tasks --------------------------------------------------------------------------


def failing_pipeline(image: str, writes_outputs: bool):
    """Two tasks on the CPU image: the first fails (after writing its output, or at once)."""
    from kfp import dsl

    def writes_then_exits(code: int) -> str:
        import atexit
        import os

        # After KFP's executor has written the output and returned, the process exits non-zero.
        atexit.register(os._exit, code)
        print("output written; exiting with", code)
        return "written"

    def fails(code: int) -> str:
        raise ValueError(f"failing on purpose with {code}")

    def consume(text: str, store: str) -> str:
        import pathlib

        pathlib.Path(store, "consumer-ran").write_text(text)
        return text

    first = dsl.component(
        writes_then_exits if writes_outputs else fails, base_image=image, install_kfp_package=False
    )
    second = dsl.component(consume, base_image=image, install_kfp_package=False)

    @dsl.pipeline(name="failing-on-purpose")
    def pipeline(store: str):
        upstream = first(code=3)
        upstream.set_caching_options(False)
        second(text=upstream.output, store=store).set_caching_options(False)

    return pipeline


@pytest.mark.parametrize(
    ("writes_outputs", "task", "code"),
    [(True, "writes-then-exits", 3), (False, "fails", 1)],
    ids=["writes-outputs-then-exits-3", "raises-at-once"],
)
def test_a_failed_container_task_fails_the_run(tmp_path, writes_outputs, task, code):
    from pipelines.local import PipelineFailedError, run_local

    store = tmp_path / "store"
    with pytest.raises(PipelineFailedError) as failed:
        run_local(
            failing_pipeline(CPU_IMAGE, writes_outputs),
            {"store": str(store)},
            pipeline_root=str(store / "local-runs"),
            docker=True,
            images=(CPU_IMAGE,),
        )
    message = str(failed.value)
    assert message.startswith(f"Task {task!r} failed in its container with exit code {code}.")
    assert "task.log" in message
    if writes_outputs:
        assert "output written; exiting with 3" in message
    else:
        assert "Cause: ValueError: failing on purpose with 3" in message
    assert not (store / "consumer-ran").exists()  # the downstream task did not run
    (run_dir,) = [path for path in (store / "local-runs").iterdir() if path.is_dir()]
    assert records(run_dir)[task]["exit_code"] == code


def test_a_missing_image_is_a_clear_error(tmp_path):
    from pipelines.local import PipelineFailedError, run_local

    missing = "tl-cpu:no-such-tag"
    with pytest.raises(PipelineFailedError, match="tl-cpu:no-such-tag' is not on this Docker"):
        run_local(
            failing_pipeline(missing, True),
            {"store": str(tmp_path / "store")},
            pipeline_root=str(tmp_path / "store" / "local-runs"),
            docker=True,
            images=(missing,),
        )


def test_a_local_source_archive_is_mounted_read_only(tmp_path, monkeypatch):
    """SOURCE=./photos.tar.gz: relative to the caller, visible in the container, not writable."""
    from kfp import dsl
    from kfp.dsl import HTML, Markdown, Metrics, Output

    from pipelines.local import run_local
    from pipelines.pipeline import PipelineOutputs

    def probe(
        source: str,
        store: str,
        report: Output[HTML],
        summary: Output[Markdown],
        metrics: Output[Metrics],
    ):
        import json
        import os
        import pathlib

        data = pathlib.Path(source).read_bytes()
        try:
            with open(source, "ab"):
                writable = True
        except OSError:
            writable = False
        facts = {"source": source, "bytes": len(data), "writable": writable, "uid": os.getuid()}
        pathlib.Path(store, "probe.json").write_text(json.dumps(facts))
        for artifact in (report, summary, metrics):
            pathlib.Path(artifact.path).write_text(json.dumps(facts))

    op = dsl.component(probe, base_image=CPU_IMAGE, install_kfp_package=False)

    @dsl.pipeline(name="source-probe")
    def pipeline(source: str, store: str) -> PipelineOutputs:
        task = op(source=source, store=store).set_caching_options(False)
        return PipelineOutputs(
            task.outputs["report"], task.outputs["summary"], task.outputs["metrics"]
        )

    (tmp_path / "photos.tar.gz").write_bytes(b"0123456789")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    outputs = run_local(
        pipeline,
        {"source": "photos.tar.gz", "store": str(store)},
        pipeline_root=str(store / "local-runs"),
        docker=True,
        images=(CPU_IMAGE,),
    )
    facts = json.loads((store / "probe.json").read_text())
    assert facts == {
        "source": str(tmp_path / "photos.tar.gz"),
        "bytes": 10,
        "writable": False,
        "uid": 10001 if os.getuid() == 0 else os.getuid(),
    }
    assert (store / "probe.json").stat().st_uid == os.getuid()
    assert json.loads(Path(outputs.report_html).read_text()) == facts


# --- GPU image ------------------------------------------------------------------------------

GPU_CHECK = r"""
import glob, json, os, site
import tensorflow as tf

info = tf.sysconfig.get_build_info()
nvidia = os.path.join(site.getsitepackages()[0], "nvidia")
found = {}
for name in ("libcudart.so", "libcublas.so", "libcudnn.so", "libcufft.so", "libcusolver.so",
             "libcusparse.so", "libnccl.so"):
    found[name] = sorted(os.path.basename(p) for p in glob.glob(f"{nvidia}/*/lib/{name}*"))
print(json.dumps({
    "tensorflow": tf.__version__,
    "is_cuda_build": tf.test.is_built_with_cuda(),
    "cuda_version": info.get("cuda_version"),
    "cudnn_version": info.get("cudnn_version"),
    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    "libraries": found,
}))
"""


@pytest.mark.skipif(not GPU_IMAGE, reason="the GPU image was not built in this run")
def test_gpu_image_imports_tensorflow_and_holds_cuda_and_cudnn():
    result = docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", GPU_IMAGE, "python", "-c", GPU_CHECK
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    pins = (REPO / "docker" / "gpu-constraints.txt").read_text()
    assert f"tensorflow=={facts['tensorflow']}" in pins
    assert facts["is_cuda_build"] is True
    cuda_major = facts["cuda_version"].split(".")[0]
    cudnn_major = facts["cudnn_version"].split(".")[0]
    libraries = facts["libraries"]
    assert f"libcudart.so.{cuda_major}" in libraries["libcudart.so"]
    assert f"libcublas.so.{cuda_major}" in libraries["libcublas.so"]
    assert f"libcudnn.so.{cudnn_major}" in libraries["libcudnn.so"]
    assert all(libraries.values()), libraries
    # No GPU on this machine: TensorFlow must say so, not pretend.
    if not Path("/dev/nvidia0").exists():
        assert facts["gpus"] == []
