"""The images' install step, replayed without a Docker engine.

The build context (the .dockerignore allowlist) is copied to a temporary folder and
docker/install.sh runs there exactly as the CPU Dockerfile runs it (the hashed dependencies, then
the project): a fresh virtual environment, the same pins. Every step's CLI must then start from
that environment and print its help. The GPU image's install is resolved (pip --dry-run, no
download) to check that its hashed requirements file lists exactly that resolution.
These tests need a package index (PyPI, or a mirror pip is configured with) and skip without.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEP_MODULES = (
    "components.data_prep",
    "components.weights",
    "components.training",
    "components.compare",
    "pipelines",
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(*paths: Path) -> dict[str, str]:
    found = {}
    for path in paths:
        for line in path.read_text().splitlines():
            name, _, version = line.split("#")[0].strip().rstrip("\\").strip().partition("==")
            if version:
                found[normalise(name)] = version
    return found


def build_context(destination: Path) -> Path:
    """Copy what .dockerignore lets into the image build context."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    for entry in (line[1:].rstrip("/") for line in lines if line.startswith("!")):
        source = REPO / entry
        if source.is_dir():
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(source, destination / entry, ignore=skip)
        elif source.is_file():
            (destination / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / entry)
    return destination


def dockerfile_install_arguments(name: str) -> list[list[str]]:
    """The arguments of each docker/install.sh call in a Dockerfile (after the script path)."""
    text = (REPO / "docker" / name).read_text()
    lines = [line for line in text.splitlines() if line.startswith("RUN") and "install.sh" in line]
    return [line.split("docker/install.sh", 1)[1].split() for line in lines]


def hashed_names(path: Path) -> dict[str, str]:
    """name -> version of a hashed requirements file (docker/requirements-*.txt)."""
    return pinned(path)


@pytest.fixture(scope="module")
def package_index(tmp_path_factory) -> None:
    """Skip when no package index answers: the install cannot be replayed offline."""
    probe = tmp_path_factory.mktemp("probe")
    download = ["download", "--no-deps", "--quiet", "--dest", str(probe), "wheel==0.48.0"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *download],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        pytest.skip(f"no package index reachable: {result.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory, package_index) -> Path:
    """The CPU image's environment, installed by the CPU Dockerfile's own command line."""
    root = tmp_path_factory.mktemp("image")
    context = build_context(root / "src")
    deps, project = dockerfile_install_arguments("Dockerfile.cpu")
    assert deps == ["deps", "/opt/venv", "docker/requirements-cpu.txt"]
    assert project == ["project", "/opt/venv", "/src", "/opt/project"]
    target = root / "venv"
    script = context / "docker" / "install.sh"
    for step in (
        ["deps", str(target), str(context / deps[2])],
        ["project", str(target), str(context), str(root / "stage")],
    ):
        result = subprocess.run(
            ["sh", str(script), *step],
            capture_output=True,
            text=True,
            cwd=context,
            timeout=1200,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    # The staged project files are exactly what the runtime stage adds to the dependencies.
    assert (root / "stage" / "pipelines" / "container_task.py").is_file()
    assert result.returncode == 0, result.stderr[-3000:]
    return target


@pytest.mark.slow
@pytest.mark.deploy
def test_install_uses_only_pinned_versions(image_venv):
    freeze = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {normalise(item["name"]): item["version"] for item in json.loads(freeze.stdout)}
    pins = pinned(REPO / "requirements.lock", REPO / "docker" / "constraints.txt")
    unpinned = {
        name: version
        for name, version in installed.items()
        if name not in ("pip", "transfer-learning-pipeline") and pins.get(name) != version
    }
    assert unpinned == {}
    # Exactly the hashed requirements were installed (pip check passed in install.sh).
    expected = hashed_names(REPO / "docker" / "requirements-cpu.txt")
    assert {name: v for name, v in installed.items() if name in expected} == expected
    assert set(installed) - set(expected) == {"pip", "transfer-learning-pipeline"}
    assert installed["tensorflow-cpu"] == pins["tensorflow-cpu"]
    assert "pytest" not in installed and "ruff" not in installed  # no development tools


@pytest.mark.slow
@pytest.mark.deploy
@pytest.mark.parametrize("module", STEP_MODULES)
def test_every_step_cli_starts_from_the_installed_environment(image_venv, module, tmp_path):
    if not (REPO / Path(*module.split("."))).joinpath("__main__.py").is_file():
        pytest.skip(f"{module} has no CLI yet")
    # Run outside the repository, so the code comes from the environment, as in the image.
    result = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: ") and module in result.stdout
    located = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", f"import {module} as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert Path(located.stdout.strip()).is_relative_to(image_venv)


@pytest.mark.slow
@pytest.mark.deploy
def test_gpu_image_resolves_to_pinned_versions_only(tmp_path, package_index):
    """The GPU image's install, resolved without downloading: every package has a pin, and
    docker/requirements-gpu.txt (installed with --no-deps) lists exactly that resolution.
    """
    context = build_context(tmp_path / "src")
    deps, _ = dockerfile_install_arguments("Dockerfile.gpu")
    assert deps == ["deps", "/opt/venv", "docker/requirements-gpu.txt"]
    files = [
        REPO / "requirements.lock",
        REPO / "docker" / "constraints.txt",
        REPO / "docker" / "gpu-constraints.txt",
    ]
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + ["--report", str(report)]
        + [arg for path in files for arg in ("-c", str(path))]
        + [f"{context}[gpu]"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {
        normalise(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    pins = pinned(*files)
    unpinned = {
        name: version
        for name, version in resolved.items()
        if name != "transfer-learning-pipeline" and pins.get(name) != version
    }
    assert unpinned == {}
    assert resolved["tensorflow"] == pins["tensorflow"] and "tensorflow-cpu" not in resolved
    hashed = hashed_names(REPO / "docker" / "requirements-gpu.txt")
    resolved.pop("transfer-learning-pipeline")
    # setuptools and wheel are installed for builds and tensorflow's run time, beyond the
    # resolution pip reports for the project.
    assert {name: v for name, v in hashed.items() if name not in ("setuptools", "wheel")} == {
        name: v for name, v in resolved.items() if name not in ("setuptools", "wheel")
    }
