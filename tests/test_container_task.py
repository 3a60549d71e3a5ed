"""The container entry point's records and how the local runner reads them (no Docker needed).

pipelines.container_task runs a task's command as `make local`'s containers do, here as a plain
subprocess: the exit code it records and returns is the command's, its log is kept, and a task
does not start after a failed one. pipelines.local.container_failure turns those records into the
run's error. tests/test_images.py runs the same path in the real images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines import container_task
from pipelines.local import container_failure, docker_arguments


def executor_input(task_dir: Path) -> str:
    return json.dumps({"outputs": {"outputFile": str(task_dir / "executor_output.json")}})


def run_task(task_dir: Path, script: str) -> subprocess.CompletedProcess:
    """Run `python -c script` through the entry point, as a KFP task in `task_dir`."""
    command = [sys.executable, "-c", script, "--executor_input", executor_input(task_dir)]
    return subprocess.run(
        [sys.executable, "-m", "pipelines.container_task", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_records_the_exit_code_and_log_of_a_task_that_wrote_outputs_then_failed(tmp_path):
    task_dir = tmp_path / "run-1" / "data-prep"
    task_dir.mkdir(parents=True)
    (task_dir / "executor_output.json").write_text("{}")  # outputs were written
    result = run_task(task_dir, "print('wrote outputs'); import sys; sys.exit(3)")
    assert result.returncode == 3
    assert "wrote outputs" in result.stdout
    status = json.loads((task_dir / container_task.STATUS_FILE).read_text())
    assert status["task"] == "data-prep" and status["exit_code"] == 3
    assert set(status["hardening"]) == {
        "uid",
        "gid",
        "root_read_only",
        "no_new_privs",
        "tmp_writable",
    }
    assert (task_dir / container_task.LOG_FILE).read_text() == "wrote outputs\n"

    message = container_failure({tmp_path / "run-1"})
    assert message.startswith("Task 'data-prep' failed in its container with exit code 3.")
    assert "  | wrote outputs" in message and str(task_dir / "task.log") in message


def test_a_successful_task_records_zero_and_the_run_passes(tmp_path):
    task_dir = tmp_path / "run-1" / "compare"
    result = run_task(task_dir, "print('ok')")
    assert result.returncode == 0
    assert json.loads((task_dir / container_task.STATUS_FILE).read_text())["exit_code"] == 0
    assert container_failure({tmp_path / "run-1"}) is None


def test_a_task_after_a_failed_one_does_not_start(tmp_path):
    run_dir = tmp_path / "run-1"
    assert run_task(run_dir / "data-prep", "raise SystemExit(4)").returncode == 4
    marker = tmp_path / "started"
    result = run_task(run_dir / "train-cnn", f"open({str(marker)!r}, 'w')")
    assert result.returncode == container_task.NOT_STARTED
    assert not marker.exists()
    assert "task 'data-prep' of this run failed with exit code 4" in result.stderr
    # The run's error names the task that failed, not the one that was held back.
    assert container_failure({run_dir}).startswith("Task 'data-prep' failed")


def test_a_task_folder_without_a_record_is_a_failure(tmp_path):
    killed = tmp_path / "run-1" / "train-transfer"
    killed.mkdir(parents=True)
    (killed / "executor_output.json").write_text("{}")
    (killed / "task.log").write_text("epoch 1\nepoch 2\n")
    message = container_failure({tmp_path / "run-1"})
    assert message.startswith("Task 'train-transfer' ended without recording its exit status")
    assert "  | epoch 2" in message and str(killed / "task.log") in message


def test_a_signal_is_reported_as_128_plus_its_number(tmp_path):
    result = run_task(tmp_path / "run" / "weights", "import os; os.kill(os.getpid(), 9)")
    assert result.returncode == 137
    status = json.loads((tmp_path / "run" / "weights" / container_task.STATUS_FILE).read_text())
    assert status["exit_code"] == 137


def test_a_command_that_is_not_a_kfp_task_runs_unrecorded(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.container_task", "sh", "-c", "exit 5"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 5 and "read-only root=" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_local_sources_are_resolved_on_the_host_and_mounted(tmp_path, monkeypatch):
    archive = tmp_path / "photos.tar.gz"
    archive.write_bytes(b"not read here")
    monkeypatch.chdir(tmp_path)
    arguments, mounts = docker_arguments(
        {"store": str(tmp_path / "store"), "source": "photos.tar.gz", "weights_url": "none"}
    )
    assert arguments["source"] == str(archive) and mounts == (str(archive),)
    assert arguments["weights_url"] == "none"
    remote, none = docker_arguments({"store": "gs://b/p", "source": "https://example.org/x"})
    assert remote["source"] == "https://example.org/x" and none == ()


def test_auto_resolves_to_the_debian_files_or_the_url(tmp_path):
    from components.data_prep.sources import resolve_auto

    arguments, mounts = docker_arguments({"store": str(tmp_path), "source": "auto"})
    assert arguments["source"] == resolve_auto("auto") != "auto"
    assert mounts == ((arguments["source"],) if arguments["source"].startswith("/") else ())


def test_the_entry_point_without_a_command_is_a_usage_error(capsys):
    assert container_task.main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_docker_runs_are_hardened_and_go_through_the_entry_point(tmp_path):
    from kfp import local

    from pipelines.local import ENTRYPOINT, IMAGE_UID, docker_runner_args

    source = tmp_path / "photos.tar.gz"
    source.write_bytes(b"x")
    args = docker_runner_args(
        str(tmp_path / "store"), keras_home=str(tmp_path / "none"), read_only_paths=(str(source),)
    )
    assert args["read_only"] is True and args["tmpfs"] == {"/tmp": "rw,nosuid,nodev"}
    assert args["security_opt"] == ["no-new-privileges"] and args["cap_drop"] == ["ALL"]
    assert args["entrypoint"] == ENTRYPOINT == ["python", "-m", "pipelines.container_task"]
    assert args["environment"]["KERAS_HOME"] == "/tmp/keras"  # the only writable place
    mounts = {mount["Target"]: mount for mount in args["mounts"]}
    assert mounts[str(source)]["ReadOnly"] is True and mounts[str(source)]["Source"] == str(source)
    expected = f"{IMAGE_UID}:{IMAGE_UID}" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert args["user"] == expected
    runner = local.DockerRunner(**args)  # kfp.local accepts every one of these arguments
    assert runner.container_run_args["entrypoint"] == ENTRYPOINT


def test_a_failure_kfp_local_reported_as_success_fails_the_run(tmp_path, monkeypatch):
    """kfp.local can miss a container's exit code, report SUCCESS, then fail resolving the next
    task's inputs with a ValueError. The container's own record decides the error."""
    import pytest

    from pipelines import local

    monkeypatch.setattr(local, "init_local", lambda *args, **kwargs: None)
    root = tmp_path / "runs"

    def pipeline(store: str):
        run_task(root / "run-1" / "fails", "raise ValueError('failing on purpose')")
        raise ValueError(
            "Tried to get output 'Output' from task 'fails', but task 'fails' not found."
        )

    with pytest.raises(local.PipelineFailedError) as failed:
        local._run(pipeline, {"store": str(tmp_path)}, str(root), True, ())
    message = str(failed.value)
    assert message.startswith("Task 'fails' failed in its container with exit code 1.")
    assert "Cause: ValueError: failing on purpose" in message

    # Without a failed record the ValueError is kfp.local's own and is not hidden.
    def broken(store: str):
        raise ValueError("not a task failure")

    with pytest.raises(ValueError, match="not a task failure"):
        local._run(broken, {"store": str(tmp_path)}, str(tmp_path / "other"), True, ())


def test_a_failed_task_inside_a_parallel_for_iteration_is_found(tmp_path):
    run_dir = tmp_path / "run-1"
    assert run_task(run_dir / "data-prep", "print('ok')").returncode == 0
    task_dir = run_dir / "for-loop-2-iteration-1" / "train-transfer"
    assert run_task(task_dir, "print('epoch 1'); raise SystemExit(5)").returncode == 5
    message = container_failure({run_dir})
    assert message.startswith("Task 'train-transfer' failed in its container with exit code 5.")
    assert "  | epoch 1" in message


def test_a_task_in_a_loop_iteration_does_not_start_after_a_failed_task(tmp_path):
    """ParallelFor tasks sit in for-loop-*-iteration-* folders below the run folder."""
    run_dir = tmp_path / "run-1"
    assert run_task(run_dir / "data-prep", "raise SystemExit(4)").returncode == 4
    marker = tmp_path / "started"
    inner = run_dir / "for-loop-2-iteration-0" / "train-transfer"
    result = run_task(inner, f"open({str(marker)!r}, 'w')")
    assert result.returncode == container_task.NOT_STARTED and not marker.exists()
    assert container_failure({run_dir}).startswith("Task 'data-prep' failed")
