#!/usr/bin/env bash
# `make image`: the component image (infra/Dockerfile) built with podman, on a machine with no Docker
# engine and no base-image registry (measured on this project's machines, 2026-12):
#   1. a Debian bookworm root file system from debootstrap (its python3 is 3.11), imported once as
#      the local base image localhost/fmpipe-base:bookworm (kept: later builds reuse it);
#   2. `podman build` of infra/Dockerfile on it, with host networking (pip reaches the package index)
#      and this machine's pip sources and CA bundle, runc as the runtime (crun cannot set
#      RLIMIT_NOFILE here). On a machine that can pull python:3.11-slim, `docker build -f
#      infra/Dockerfile .` builds the same Dockerfile unchanged.
# Environment: IMAGE (default localhost/fmpipe/python-components:0.1.0), TORCH_VARIANT (cpu | cuda,
# default cpu), DEBIAN_MIRROR, PIP_FIND_LINKS (a local wheel folder, e.g. one holding torch's CPU
# wheel), PIP_CERT (a CA bundle).
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=localhost/fmpipe-base:bookworm
IMAGE=${IMAGE:-localhost/fmpipe/python-components:0.1.0}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need debootstrap || ! need runc; then
  [ "$(id -u)" = 0 ] || { echo "install podman, debootstrap and runc (apt-get, as root)"; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null
fi
if ! podman image exists "$BASE"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "building the base image $BASE with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,git bookworm "$rootfs" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
fi
args=(--network host --isolation chroot --build-arg "PYTHON_IMAGE=$BASE"
      --build-arg "TORCH_VARIANT=${TORCH_VARIANT:-cpu}" -f infra/Dockerfile -t "$IMAGE")
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "${PIP_FIND_LINKS%% *}" ]; then
  # A local wheel folder (here: torch's CPU wheel) instead of PyTorch's own index.
  args+=(-v "${PIP_FIND_LINKS%% *}:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels --build-arg TORCH_CPU_INDEX=)
fi
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$ca" ]; then
  args+=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro" --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
podman --runtime runc build "${args[@]}" .
echo "built $IMAGE"
