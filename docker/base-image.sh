#!/bin/sh
# Build a registry-free base image from Debian's packages, for machines that cannot pull the
# official python:3.11-slim-bookworm: the same Debian release (bookworm) and Python minor
# version (3.11), the machine's CA bundle, PATH and LANG set.
#
# Usage: docker/base-image.sh [TAG_PREFIX]   (make base-image)
# Prints the image's tag on stdout (everything else goes to stderr). The tag is a hash of this
# script, the Debian mirror and the CA bundle, so a second call with the same inputs builds
# nothing and prints the same tag.
set -eu

prefix=${1:-tl-base}
docker=${DOCKER:-docker}
suite=bookworm
packages=python3,python3-venv,python3-pip,ca-certificates
ca_bundle=/etc/ssl/certs/ca-certificates.crt

# The mirror apt already uses (deb822 .sources files or a one-line sources.list).
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}')
fi
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 ~ / bookworm / {print $2; exit}' /etc/apt/sources.list \
        2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

for tool in debootstrap "$docker"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: $tool not found (apt-get install -y debootstrap docker.io)" >&2
        exit 2
    fi
done
if [ ! -f "$ca_bundle" ]; then
    echo "$0: no CA bundle at $ca_bundle (apt-get install -y ca-certificates)" >&2
    exit 2
fi

digest=$( (cat "$0"; echo "$suite $packages $mirror"; cat "$ca_bundle") | sha256sum | cut -c1-12)
tag="$prefix:py3.11-$suite-$digest"
if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "$0: $tag exists; nothing to build" >&2
    echo "$tag"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: debootstrap needs root (sudo make base-image)" >&2
    exit 2
fi
rootfs=$(mktemp -d "${TMPDIR:-/tmp}/tl-base.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT INT TERM
echo "$0: debootstrap $suite from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/*
# The machine's bundle: it may trust certificates (a proxy's, a company CA) that Debian's lacks.
cp "$ca_bundle" "$rootfs$ca_bundle"
"$rootfs/usr/bin/python3" --version >/dev/null 2>&1 || true
tar -C "$rootfs" --numeric-owner -c . | "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $suite ($packages) from $mirror" \
    - "$tag" >&2
echo "$tag"
