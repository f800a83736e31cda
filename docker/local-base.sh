#!/usr/bin/env bash
# Builds the image's base offline, for hosts that cannot pull python:3.11.7-slim-bookworm:
#   docker/local-base.sh [PYTHON_PREFIX]   ->  localhost/python:<version>-slim-bookworm
# Debian bookworm (minbase, from the apt sources this host already uses, with the shared libraries
# CPython's modules link against) plus a CPython install copied into /usr/local, by default the one
# under the project's .venv. The same interpreter as the native run keeps results byte-identical
# (result files record the Python version).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')}
version=$("$prefix/bin/python3" -c 'import platform; print(platform.python_version())')
tag=localhost/python:$version-slim-bookworm
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}
if podman image exists "$tag"; then echo "$tag"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The archive is a dated snapshot: apt must accept its expired Release files.
mmdebstrap --quiet --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"' \
  --include=ca-certificates,netbase,tzdata,libssl3,libsqlite3-0,libffi8,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libexpat1,libtirpc3 \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/rootfs" /etc/apt/sources.list.d/debian.sources
lib=$prefix/lib/python${version%.*}
mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/usr/local/lib"
cp -a "$prefix/bin/python${version%.*}" "$work/rootfs/usr/local/bin/"
cp -a "$prefix"/lib/libpython3*.so* "$work/rootfs/usr/local/lib/"
# The standard library without its tests, its GUI modules and whatever the host installed into it.
tar -C "$prefix/lib" --exclude=__pycache__ --exclude="python${version%.*}/test" \
  --exclude="python${version%.*}/idlelib" --exclude="python${version%.*}/tkinter" \
  --exclude="python${version%.*}/site-packages/*" -c "python${version%.*}" | tar -C "$work/rootfs/usr/local/lib" -x
ln -s "python${version%.*}" "$work/rootfs/usr/local/bin/python3"
ln -s "python${version%.*}" "$work/rootfs/usr/local/bin/python"
chroot "$work/rootfs" ldconfig
chroot "$work/rootfs" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
tar -C "$work/rootfs" -c . | podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
echo "$tag"
