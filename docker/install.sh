#!/bin/sh
# Install the project into a virtual environment in two steps, so that the image's dependency
# layer is built before the project's code is copied in (a code change keeps that layer cached).
#
# Usage: docker/install.sh deps VENV REQUIREMENTS
#          create VENV (it must not exist yet) and install the hashed REQUIREMENTS into it
#          (docker/requirements-cpu.txt or -gpu.txt) with --require-hashes --no-deps
#        docker/install.sh project VENV SOURCE [STAGE]
#          install the project folder SOURCE (pyproject.toml, components/, pipelines/) into VENV
#          without touching its dependencies, check that nothing is missing, and copy the
#          project's own installed files (its RECORD) to STAGE, laid out as site-packages, so
#          an image can add them to the dependency layer without copying the whole VENV again
#
# Both Dockerfiles run this script, and tests/test_deploy_install.py replays it in a temporary
# folder, so what the images contain is what the tests start.
set -eu

usage() {
    echo "usage: $0 deps VENV REQUIREMENTS | $0 project VENV SOURCE [STAGE]" >&2
    exit 2
}
[ "$#" -eq 3 ] || [ "$#" -eq 4 ] || usage
step=$1
venv=$2
path=$3
stage=${4:-}

case "$step" in
    deps)
        if [ -e "$venv" ]; then
            echo "$0: $venv already exists; the install needs a fresh folder" >&2
            exit 2
        fi
        if [ ! -f "$path" ]; then
            echo "$0: no requirements file at $path" >&2
            exit 2
        fi
        # The same pip release as `make install`.
        python3.11 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip==26.3
        # Every file is checked against the sha256 in the requirements files; --no-deps because
        # they list the whole resolution (docker/hash_pins.py wrote them from the pins). The
        # build tools come first: a few pinned packages are source only and build with them,
        # without build isolation (which would fetch unhashed build tools).
        build="$(dirname "$path")/requirements-build.txt"
        "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$build"
        "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps \
            --no-build-isolation -r "$path"
        ;;
    project)
        if [ ! -x "$venv/bin/python" ]; then
            echo "$0: $venv is not a virtual environment; run the deps step first" >&2
            exit 2
        fi
        # A regular (non-editable) install: the code lives in the virtual environment, so an
        # image needs nothing from the build context but the environment itself. No build
        # isolation and no dependencies: nothing is downloaded here, setuptools comes from the
        # hashed requirements.
        "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation "$path"
        "$venv/bin/python" -m pip check
        if [ -n "$stage" ]; then
            "$venv/bin/python" -I - "$stage" <<'PYTHON'
import shutil
import sys
from importlib import metadata
from pathlib import Path

stage = Path(sys.argv[1])
site = Path(metadata.distribution("transfer-learning-pipeline").locate_file(""))
for entry in metadata.distribution("transfer-learning-pipeline").files:
    source = (site / entry).resolve()
    if not source.is_relative_to(site):
        raise SystemExit(f"{entry}: installed outside site-packages, which the image does not copy")
    if source.is_file():
        (stage / entry).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, stage / entry)
PYTHON
        fi
        ;;
    *) usage ;;
esac
