"""Run the pipeline on this machine with kfp.local: SubprocessRunner, or DockerRunner (--docker).

The SubprocessRunner runs every task in the current Python environment (the project venv), so
the components import the installed `components` and `pipelines` packages. The DockerRunner
runs the same tasks in the project's images; a local store folder and Keras' cache are mounted
into the containers at the same paths.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common import storage

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# What to do when a task fails, in this CLI's terms (the step's own message uses its CLI's).
HINTS = {
    "weights": "hint: train without pretrained weights with --weights none (make run "
    "WEIGHTS=none), or point --weights at a reachable copy and pin it with --param "
    "weights_sha256=HASH (make run WEIGHTS=URL PARAMS=weights_sha256=HASH).",
    "data-prep": "hint: --source takes an IDX folder, base URL, gs:// prefix, image-folder tree "
    "or archive (make run SOURCE=...); auto uses the Debian files, else the official URL.",
}


class PipelineFailedError(RuntimeError):
    """A task of the local run failed; its log above holds the cause."""


@dataclass(frozen=True)
class LocalOutputs:
    """Where a finished local run left what a user reads."""

    report_html: str
    summary_md: str
    metrics_json: str
    run_dir: str

    def describe(self) -> str:
        """The lines printed at the end of a run."""
        return (
            f"Report (HTML):      {self.report_html}\n"
            f"Summary (Markdown): {self.summary_md}\n"
            f"Metrics (JSON):     {self.metrics_json}\n"
            f"All task outputs:   {self.run_dir}"
        )


def default_pipeline_root(store: str) -> str:
    """Local task outputs go next to a local store, else under ./local_outputs."""
    if storage.is_gcs(store):
        return str(Path("local_outputs").resolve())
    return str(Path(store).resolve() / "local-runs")


def docker_runner_args(store: str, keras_home: str | None = None) -> dict[str, Any]:
    """`containers.run` arguments for the DockerRunner: mounts, user and network."""
    from docker.types import Mount

    mounts = []
    environment = {}
    if not storage.is_gcs(store):
        local_store = str(Path(store).resolve())
        Path(local_store).mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(target=local_store, source=local_store, type="bind"))
    keras = Path(keras_home or os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if keras.is_dir():
        mounts.append(Mount(target="/keras", source=str(keras), type="bind", read_only=True))
        environment["KERAS_HOME"] = "/keras"
    for name in ("STORAGE_EMULATOR_HOST",):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    return {
        "mounts": mounts,
        "environment": environment,
        # Files written into the mounted store belong to the calling user.
        "user": f"{os.getuid()}:{os.getgid()}",
        # Loopback URLs (a local weights server, the GCS emulator) stay reachable.
        "network_mode": "host",
    }


def check_docker() -> None:
    """Fail at once, and clearly, when no Docker engine answers."""
    import docker

    try:
        docker.from_env().ping()
    except docker.errors.DockerException as error:
        raise PipelineFailedError(
            f"--docker needs a running Docker engine, and none answered ({error}); "
            "start Docker, or run without --docker (make run) in this environment"
        ) from None


def init_local(pipeline_root: str, *, docker: bool, store: str) -> None:
    """Initialise kfp.local with the chosen runner."""
    from kfp import local

    if docker:
        check_docker()
        runner = local.DockerRunner(**docker_runner_args(store))
    else:
        runner = local.SubprocessRunner(use_venv=False)
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(runner=runner, pipeline_root=pipeline_root, raise_on_error=True)


class _Tail(io.TextIOBase):
    """Pass writes through to a stream and keep the last lines (the failed task's log)."""

    def __init__(self, stream, keep: int = 400) -> None:
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.lines.extend(text.splitlines())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


# The last line of a Python traceback: "package.module.SomeError: message".
_CAUSE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)\b.*)$")


def failure_cause(lines) -> str | None:
    """The exception line of the last traceback in a task's log, if there is one."""
    for line in reversed(list(lines)):
        match = _CAUSE.match(_ANSI.sub("", line))
        if match:
            return match.group(1).strip()
    return None


def run_local(
    pipeline_func, arguments: dict[str, Any], *, pipeline_root: str, docker: bool = False
) -> LocalOutputs:
    """Run the whole pipeline locally; raise PipelineFailedError naming the task and cause."""
    init_local(pipeline_root, docker=docker, store=arguments["store"])
    tail = _Tail(sys.stdout)
    try:
        with contextlib.redirect_stdout(tail), warnings.catch_warnings():
            # Expected locally: Kubernetes settings do nothing here, and the SubprocessRunner
            # runs the project's image's code in this environment by design.
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
            warnings.filterwarnings("ignore", message=".*non-Python base image")
            task = pipeline_func(**arguments)
    except RuntimeError as error:
        # kfp.local: "Pipeline 'x' finished with status FAILURE. Inner task failed: 'task'."
        message = _ANSI.sub("", str(error))
        cause = failure_cause(tail.lines)
        if cause:
            message = f"{message} Cause: {cause}"
        hint = next((text for task, text in HINTS.items() if f"'{task}'" in message), None)
        raise PipelineFailedError(f"{message}\n{hint}" if hint else message) from None
    # KFP names artifact files after the output (no extension): copy the three files a user
    # opens into the run's folder under names a browser or editor recognises.
    run_dir = Path(task.outputs["report"].path).parent.parent
    paths = []
    for output, name in (
        ("report", "report.html"),
        ("summary", "summary.md"),
        ("metrics", "metrics.json"),
    ):
        shutil.copyfile(task.outputs[output].path, run_dir / name)
        paths.append(str(run_dir / name))
    return LocalOutputs(*paths, run_dir=str(run_dir))
