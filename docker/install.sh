#!/bin/sh
# Install the project into a fresh virtual environment from the repository's pins.
#
# Usage: docker/install.sh VENV EXTRA SOURCE [CONSTRAINTS...]
#   VENV         folder of the new virtual environment (must not exist yet)
#   EXTRA        the project extra to install: cpu (tensorflow-cpu) or gpu (tensorflow[and-cuda])
#   SOURCE       the project folder (pyproject.toml, requirements.lock, components/, pipelines/)
#   CONSTRAINTS  further constraint files on top of requirements.lock and docker/constraints.txt
#
# Both Dockerfiles run this script, and tests/test_deploy_install.py replays it in a temporary
# folder, so what the images contain is what the tests start.
set -eu

if [ "$#" -lt 3 ]; then
    echo "usage: $0 VENV EXTRA SOURCE [CONSTRAINTS...]" >&2
    exit 2
fi
venv=$1
extra=$2
source_dir=$3
shift 3

case "$extra" in
    cpu | gpu) ;;
    *)
        echo "$0: EXTRA must be cpu or gpu, got '$extra'" >&2
        exit 2
        ;;
esac
if [ -e "$venv" ]; then
    echo "$0: $venv already exists; the install needs a fresh folder" >&2
    exit 2
fi

# The same pip release as `make install`.
python3.11 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip==26.3

# Turn the remaining arguments into "-c FILE" pairs, after the two constraint files every
# install uses: requirements.lock (the development pins) and docker/constraints.txt (the pins
# that `pip freeze` leaves out of requirements.lock).
count=$#
while [ "$count" -gt 0 ]; do
    set -- "$@" -c "$1"
    shift
    count=$((count - 1))
done
set -- -c "$source_dir/requirements.lock" -c "$source_dir/docker/constraints.txt" "$@"

# A regular (non-editable) install: the code lives in the virtual environment, so an image
# needs nothing from the build context but the environment itself.
"$venv/bin/python" -m pip install --quiet "$@" "${source_dir}[${extra}]"
"$venv/bin/python" -m pip check
