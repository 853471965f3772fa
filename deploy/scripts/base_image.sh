#!/usr/bin/env bash
# The base image, made here: no image can be pulled from a registry on these machines.
# debootstrap a minimal Debian bookworm from the mirror this machine's apt already uses,
# then `docker import` it. Skipped when the image exists (about a minute otherwise).
set -euo pipefail
DOCKER=/usr/bin/docker
IMAGE=${GATEMESH_BASE_IMAGE:-gatemesh-base:bookworm}
if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
  | grep -oE '^(URIs:|deb)[[:space:]]+[^[:space:]]+' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
[ -n "$mirror" ] || { echo "no Debian mirror in this machine's apt sources" >&2; exit 1; }
root=$(mktemp -d /var/tmp/gatemesh-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# The same mirror inside the image, for the Dockerfile's apt-get.
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
tar -C "$root" -c . | "$DOCKER" import - "$IMAGE" >/dev/null
echo "built $IMAGE"
