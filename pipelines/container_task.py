"""Entry point of `make local`'s containers: run one kfp.local task and record how it ended.

kfp.local 2.17's DockerRunner starts every container with `auto_remove=True`; when the container
is already gone by the time the runner asks for its exit code (Docker answers NotFound), the
runner assumes success. So a task that fails, even one that wrote its outputs first, can be
reported as SUCCESS. The runner takes an `entrypoint` among its `container_run_args`, and
pipelines.local sets it to this module: the task's own command (what KFP would run) becomes its
arguments. This module runs that command, copies its output to the container log and to
`<task folder>/task.log`, and writes `<task folder>/task-exit.json` with the exit code before it
exits with that same code. pipelines.local reads those files after the run and fails it, naming
the task, whatever kfp.local reported.

It also records the container's hardening as the task saw it (user, read-only root filesystem,
no_new_privs, writable /tmp), and refuses to start a task once an earlier task of the same run
has failed, so a failure stops the run at the next task. Standard library only: it runs before
anything else in the container.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

STATUS_FILE = "task-exit.json"
LOG_FILE = "task.log"
# Exit code of a task that did not start because an earlier task of the run had failed.
NOT_STARTED = 125
# kfp.local's folders of ParallelFor iterations, between a run folder and its loops' tasks.
LOOP_FOLDER_PREFIX = "for-loop-"


def task_folder(command: list[str]) -> Path | None:
    """The task's output folder: where KFP's executor input puts its executor_output.json."""
    for flag, value in itertools.pairwise(command):
        if flag == "--executor_input":
            try:
                output_file = json.loads(value)["outputs"]["outputFile"]
            except (ValueError, KeyError, TypeError):
                return None
            return Path(output_file).parent
    return None


def hardening() -> dict:
    """What confines this process: user, root filesystem, privileges, /tmp."""
    no_new_privs = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("NoNewPrivs:"):
                no_new_privs = line.split()[1] == "1"
    except OSError:
        pass
    try:
        with tempfile.NamedTemporaryFile(dir="/tmp"):
            tmp_writable = True
    except OSError:
        tmp_writable = False
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "no_new_privs": no_new_privs,
        "tmp_writable": tmp_writable,
    }


def run_folder(folder: Path) -> Path:
    """The run folder of a task folder: its parent, above any ParallelFor iteration folders."""
    parent = folder.parent
    while parent.name.startswith(LOOP_FOLDER_PREFIX) and parent.parent != parent:
        parent = parent.parent
    return parent


def failed_before(folder: Path) -> tuple[str, int] | None:
    """The first earlier task of this run (same run folder, any loop iteration) that failed."""
    failures = []
    for status_file in run_folder(folder).rglob(STATUS_FILE):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            continue
        if status_file.parent != folder and status.get("exit_code") not in (0, NOT_STARTED):
            finished = status.get("finished", "")
            failures.append((finished, status_file.parent.name, status["exit_code"]))
    return min(failures)[1:] if failures else None


def write_status(folder: Path, status: dict) -> None:
    """Publish task-exit.json atomically (a reader never sees half a file)."""
    temporary = folder / f".{STATUS_FILE}.tmp"
    temporary.write_text(json.dumps(status, indent=2) + "\n")
    temporary.replace(folder / STATUS_FILE)


def now() -> str:
    """The current time, UTC, ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat()


def run(command: list[str]) -> int:
    """Run `command`, tee its output into the task log, record and return its exit code."""
    folder = task_folder(command)
    confinement = hardening()
    print(
        "container: uid={uid} gid={gid} read-only root={root_read_only} "
        "no_new_privs={no_new_privs} writable /tmp={tmp_writable}".format(**confinement),
        flush=True,
    )
    if folder is None:  # not a KFP task: run it as it is
        return subprocess.call(command)
    folder.mkdir(parents=True, exist_ok=True)
    status = {"task": folder.name, "started": now(), "hardening": confinement}
    upstream = failed_before(folder)
    if upstream is not None:
        name, code = upstream
        message = f"not started: task {name!r} of this run failed with exit code {code}"
        print(message, file=sys.stderr, flush=True)
        ended = {"exit_code": NOT_STARTED, "finished": now(), "note": message}
        write_status(folder, {**status, **ended})
        return NOT_STARTED
    with open(folder / LOG_FILE, "wb") as log:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, _frame: child.send_signal(number))
        for line in child.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            log.write(line)
            log.flush()  # the log survives a container that is killed
        code = child.wait()
    # A child killed by signal N exits like a shell reports it: 128 + N.
    exit_code = 128 - code if code < 0 else code
    write_status(folder, {**status, "exit_code": exit_code, "finished": now()})
    return exit_code


def main(argv: list[str] | None = None) -> int:
    """Run `python -m pipelines.container_task COMMAND [ARG...]`."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m pipelines.container_task COMMAND [ARG...]", file=sys.stderr)
        return 2
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
