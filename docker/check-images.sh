#!/usr/bin/env bash
# make check-images: the images for real, on this machine, without a registry.
#
#   1. a Docker engine: the one that answers, or dockerd started here (and stopped at the end);
#   2. the base image from Debian's packages (make base-image; a no-op when it exists);
#   3. the CPU image, and the GPU image (tensorflow[and-cuda]) as a build smoke test;
#   4. tests/test_images.py: `make local` end to end in the images (outputs, ownership,
#      hardening, the report in headless Chromium), failing tasks, the GPU image's TensorFlow
#      and CUDA/cuDNN libraries.
#
# LOCAL_GPU_IMAGE: the image make local runs train-transfer in (default: the CPU image).
# Docker's layer cache stays in the engine between runs: with unchanged dependencies, only the
# project layers are rebuilt. GPU_IMAGE_BUILD=never skips the GPU image (make local then runs the
# transfer step in the CPU image); =auto (the default) builds it; docs/operations.md gives times.
set -euo pipefail
cd "$(dirname "$0")/.."

docker=${DOCKER:-docker}
make=${MAKE:-make}
venv=${VENV:-.venv}
cpu_image=${CHECK_CPU_IMAGE:-tl-cpu:check}
gpu_image=${CHECK_GPU_IMAGE:-tl-gpu:check}
gpu_build=${GPU_IMAGE_BUILD:-auto}

seconds() { date +%s; }
step() { printf '\n== %s\n' "$*"; }

# 1. A Docker engine.
daemon_pid=
stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        step "stopping the dockerd this check started (pid $daemon_pid)"
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
}
trap stop_daemon EXIT
if ! "$docker" info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        echo "check-images: no Docker engine answers and dockerd is not installed" \
            "(apt-get install -y docker.io)" >&2
        exit 2
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "check-images: no Docker engine answers; start one (dockerd needs root)" >&2
        exit 2
    fi
    log=$(mktemp "${TMPDIR:-/tmp}/dockerd.XXXXXX.log")
    step "starting dockerd (log: $log)"
    dockerd >"$log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 120); do
        "$docker" info >/dev/null 2>&1 && break
        if ! kill -0 "$daemon_pid" 2>/dev/null; then
            echo "check-images: dockerd exited; its log:" >&2
            tail -20 "$log" >&2
            daemon_pid=
            exit 1
        fi
        sleep 0.5
    done
    "$docker" info >/dev/null
fi

# 2. The base image.
start=$(seconds)
step "base image (make base-image)"
base=$("$make" --no-print-directory -s base-image DOCKER="$docker")
echo "base image: $base ($(($(seconds) - start)) s)"

# 3. The images.
start=$(seconds)
step "CPU image $cpu_image"
"$make" --no-print-directory cpu-image DOCKER="$docker" BASE_IMAGE="$base" CPU_IMAGE="$cpu_image"
echo "CPU image built in $(($(seconds) - start)) s:" \
    "$("$docker" image inspect --format '{{.Size}}' "$cpu_image" | awk '{printf "%.2f GB", $1/1e9}')"

gpu_for_tests=
if [ "$gpu_build" != never ]; then
    start=$(seconds)
    step "GPU image $gpu_image (build smoke test)"
    "$make" --no-print-directory gpu-image DOCKER="$docker" BASE_IMAGE="$base" \
        GPU_IMAGE="$gpu_image"
    echo "GPU image built in $(($(seconds) - start)) s:" \
        "$("$docker" image inspect --format '{{.Size}}' "$gpu_image" | awk '{printf "%.2f GB", $1/1e9}')"
    gpu_for_tests=$gpu_image
fi

# 4. The images at work.
start=$(seconds)
step "tests/test_images.py: make local end to end, failing tasks, GPU libraries"
# make local runs train-transfer in the CPU image unless LOCAL_GPU_IMAGE names another: on this
# CPU-only machine the GPU image's TensorFlow build twice lost its container, without an exit
# record, while exporting the SavedModel (docs/operations.md, "Containers locally").
TL_CPU_IMAGE="$cpu_image" TL_GPU_IMAGE="$gpu_for_tests" \
    TL_LOCAL_GPU_IMAGE="${LOCAL_GPU_IMAGE:-$cpu_image}" \
    "$venv/bin/pytest" -p no:cacheprovider -v --durations=5 tests/test_images.py
echo "image tests took $(($(seconds) - start)) s"

# Old builds of these images (replaced by the tags above) only take disk: remove them. The layer
# cache (the dependency layers) stays.
"$docker" image prune --force --filter label=org.opencontainers.image.title=tl-cpu >/dev/null
"$docker" image prune --force --filter label=org.opencontainers.image.title=tl-gpu >/dev/null
