"""Run the pipeline on this machine with kfp.local: SubprocessRunner, or DockerRunner (--docker).

The SubprocessRunner runs every task in the current Python environment (the project venv), so
the components import the installed `components` and `pipelines` packages. The DockerRunner
runs the same tasks in the project's images (make local), hardened: the image's non-root user
or the caller's uid, a read-only root filesystem with a tmpfs /tmp, no new privileges, no
capabilities. A local store folder is mounted read-write at the same path; a local source or
weights file (after `auto` is resolved here, on the host) and Keras' cache are mounted
read-only. Every container runs its task through pipelines.container_task, which records the
task's exit code in the task's folder: kfp.local 2.17 can report a failed container as a success
(see that module), so the run is judged by those records.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common import storage
from pipelines import container_task

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


# The images' non-root user (docker/Dockerfile.*): containers run as it when root calls.
IMAGE_UID = 10001
# Every container runs its task through this module (see pipelines.container_task).
ENTRYPOINT = ["python", "-m", "pipelines.container_task"]
# Parameters that may name a file or folder on this machine.
LOCAL_PATH_PARAMETERS = ("source", "weights_url")


def container_user() -> str:
    """The caller's uid:gid, or the image's non-root user when the caller is root."""
    if os.getuid() == 0:
        return f"{IMAGE_UID}:{IMAGE_UID}"
    return f"{os.getuid()}:{os.getgid()}"


def docker_runner_args(
    store: str,
    keras_home: str | None = None,
    read_only_paths: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`containers.run` arguments for the DockerRunner: mounts, user, hardening, entrypoint."""
    from docker.types import Mount

    mounts = []
    environment = {}
    if not storage.is_gcs(store):
        local_store = str(Path(store).resolve())
        Path(local_store).mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(target=local_store, source=local_store, type="bind"))
    for path in read_only_paths:
        mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    keras = Path(keras_home or os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if keras.is_dir():
        mounts.append(Mount(target="/keras", source=str(keras), type="bind", read_only=True))
        environment["KERAS_HOME"] = "/keras"
    else:
        environment["KERAS_HOME"] = "/tmp/keras"  # the root filesystem is read-only
    for name in ("STORAGE_EMULATOR_HOST",):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    return {
        "mounts": mounts,
        "environment": environment,
        # Files written into the mounted store belong to the calling user (or, for root, are
        # handed back to it after the run: see owned_by_caller).
        "user": container_user(),
        # Loopback URLs (a local weights server, the GCS emulator) stay reachable.
        "network_mode": "host",
        # Hardening: only the store and a tmpfs /tmp are writable; no privilege escalation.
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev"},
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        # Record each task's real exit code (kfp.local may report a failed container as a
        # success: see pipelines.container_task). kfp.local 2.17 passes `auto_remove=True`
        # itself, so that cannot be switched off here; `entrypoint` is a supported argument.
        "entrypoint": ENTRYPOINT,
    }


def _local_path(value: Any) -> Path | None:
    """`value` as an absolute path when it names an existing file or folder here."""
    if not isinstance(value, str) or not value or value in ("auto", "default", "none"):
        return None
    if "://" in value:
        return None
    path = Path(value).expanduser()
    return path.resolve() if path.exists() else None


def docker_arguments(arguments: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Arguments for a run in containers, and the host paths to mount read-only.

    `source="auto"` is resolved here, where the Debian Fashion-MNIST files may be installed;
    a local source or weights path (relative to the current folder) becomes absolute, and is
    mounted at the same path, read-only.
    """
    from components.data_prep.sources import resolve_auto

    arguments = dict(arguments)
    if arguments.get("source") == "auto":
        arguments["source"] = resolve_auto("auto")
    mounts = []
    for name in LOCAL_PATH_PARAMETERS:
        path = _local_path(arguments.get(name))
        if path is not None:
            arguments[name] = str(path)
            mounts.append(str(path))
    return arguments, tuple(dict.fromkeys(mounts))


def _chown_tree(root: Path, from_uid: int, to_uid: int, to_gid: int) -> None:
    """Give every entry under `root` (and root) owned by `from_uid` to `to_uid:to_gid`."""
    if not root.exists():
        return
    entries = [root]
    for folder, dirs, files in os.walk(root):
        entries.extend(Path(folder) / name for name in dirs + files)
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            if entry.lstat().st_uid == from_uid:
                os.lchown(entry, to_uid, to_gid)


@contextlib.contextmanager
def owned_by_caller(folders: list[str]) -> Iterator[None]:
    """As root, let the image's user write into `folders`, and hand everything back after.

    A non-root caller's containers run as the caller: nothing to do.
    """
    if os.getuid() != 0:
        yield
        return
    local = [Path(folder) for folder in folders if not storage.is_gcs(folder)]
    for folder in local:
        folder.mkdir(parents=True, exist_ok=True)
        _chown_tree(folder, 0, IMAGE_UID, IMAGE_UID)
    try:
        yield
    finally:
        for folder in local:
            _chown_tree(folder, IMAGE_UID, os.getuid(), os.getgid())


def check_docker(images: tuple[str, ...] = ()) -> None:
    """Fail at once, and clearly, when no Docker engine answers or an image is missing."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise PipelineFailedError(
            f"--docker needs a running Docker engine, and none answered ({error}); "
            "start Docker, or run without --docker (make run) in this environment"
        ) from None
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise PipelineFailedError(
                f"image {image!r} is not on this Docker engine: build it (make images, with the "
                "same CPU_IMAGE/GPU_IMAGE or TAG), or pull it from your registry"
            ) from None


def init_local(
    pipeline_root: str, *, docker: bool, store: str, read_only_paths: tuple[str, ...] = ()
) -> None:
    """Initialise kfp.local with the chosen runner."""
    from kfp import local

    if docker:
        runner = local.DockerRunner(**docker_runner_args(store, read_only_paths=read_only_paths))
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


def _run_folders(pipeline_root: str) -> set[Path]:
    root = Path(pipeline_root)
    return {path for path in root.iterdir() if path.is_dir()} if root.is_dir() else set()


def _task_dirs(folder: Path) -> list[Path]:
    """A run's task folders, those inside its ParallelFor iterations (for-loop-*) too."""
    found = []
    for path in sorted(path for path in folder.iterdir() if path.is_dir()):
        loop = path.name.startswith(container_task.LOOP_FOLDER_PREFIX)
        found += _task_dirs(path) if loop else [path]
    return found


def container_failure(run_folders: set[Path], log_lines: int = 40) -> str | None:
    """The first failed container task of a run: its name, exit code and end of its log.

    Read from the records pipelines.container_task left in each task folder. None when every
    task that ran exited 0.
    """
    failures = []
    for folder in sorted(run_folders):
        for task_dir in _task_dirs(folder):
            status_file = task_dir / container_task.STATUS_FILE
            if not status_file.is_file():
                # A task that ran but left no record: killed (out of memory) or not started.
                failures.append(("~", task_dir, None))
                continue
            status = json.loads(status_file.read_text())
            if status.get("exit_code") not in (0, container_task.NOT_STARTED):
                failures.append((status.get("finished", ""), task_dir, status["exit_code"]))
    if not failures:
        return None
    _, task_dir, code = min(failures, key=lambda failure: failure[0])
    log = task_dir / container_task.LOG_FILE
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    if code is None:
        message = (
            f"Task {task_dir.name!r} ended without recording its exit status: its container "
            "was killed (out of memory, or stopped from outside) or did not start."
        )
    else:
        message = f"Task {task_dir.name!r} failed in its container with exit code {code}."
    cause = failure_cause(lines)
    if cause:
        message = f"{message} Cause: {cause}"
    shown = "\n".join(f"  | {line}" for line in lines[-log_lines:])
    message = f"{message}\nIts log ({log}, last {min(len(lines), log_lines)} lines):\n{shown}"
    hint = HINTS.get(task_dir.name)
    return f"{message}\n{hint}" if hint else message


def run_local(
    pipeline_func,
    arguments: dict[str, Any],
    *,
    pipeline_root: str,
    docker: bool = False,
    images: tuple[str, ...] = (),
) -> LocalOutputs:
    """Run the whole pipeline locally; raise PipelineFailedError naming the task and cause.

    With `docker`, `images` are checked to be on the Docker engine before anything starts.
    """
    read_only_paths: tuple[str, ...] = ()
    ownership: contextlib.AbstractContextManager = contextlib.nullcontext()
    if docker:
        check_docker(images)
        arguments, read_only_paths = docker_arguments(arguments)
        ownership = owned_by_caller([arguments["store"], pipeline_root])
    with ownership:
        return _run(pipeline_func, arguments, pipeline_root, docker, read_only_paths)


def _run(
    pipeline_func,
    arguments: dict[str, Any],
    pipeline_root: str,
    docker: bool,
    read_only_paths: tuple[str, ...],
) -> LocalOutputs:
    init_local(
        pipeline_root, docker=docker, store=arguments["store"], read_only_paths=read_only_paths
    )
    before = _run_folders(pipeline_root)
    tail = _Tail(sys.stdout)
    try:
        with contextlib.redirect_stdout(tail), warnings.catch_warnings():
            # Expected locally: Kubernetes settings do nothing here, and the SubprocessRunner
            # runs the project's image's code in this environment by design.
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
            warnings.filterwarnings("ignore", message=".*non-Python base image")
            task = pipeline_func(**arguments)
    except (RuntimeError, ValueError) as error:
        # A container's own record beats kfp.local's view (it may have missed the failure).
        # When it reported a failed task as SUCCESS, the next task's inputs are missing and
        # kfp.local raises ValueError ("Tried to get output ...") instead of RuntimeError.
        failure = docker and container_failure(_run_folders(pipeline_root) - before)
        if failure:
            raise PipelineFailedError(failure) from None
        if isinstance(error, ValueError):
            raise
        # kfp.local: "Pipeline 'x' finished with status FAILURE. Inner task failed: 'task'."
        message = _ANSI.sub("", str(error))
        cause = failure_cause(tail.lines)
        if cause:
            message = f"{message} Cause: {cause}"
        hint = next((text for task, text in HINTS.items() if f"'{task}'" in message), None)
        raise PipelineFailedError(f"{message}\n{hint}" if hint else message) from None
    failure = docker and container_failure(_run_folders(pipeline_root) - before)
    if failure:
        raise PipelineFailedError(failure)
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
