#!/bin/sh
# The sidecar image's entrypoint (Dockerfile, target sidecar). Everything the
# sidecar needs is in the image (BCC, the Python environment, Debian's generic
# kernel headers): at start it only links headers for the node's kernel under
# /lib/modules/$(uname -r) -- the node's own, mounted read-only at $HOST_ROOT,
# when the node has them, the image's otherwise -- and installs nothing.
set -e
cd "$(dirname "$0")/.."
HOST_ROOT=${HOST_ROOT:-/host} scripts/setup.sh headers
exec .venv/bin/python -m ebpf_sidecar --catalog bpf "$@"
