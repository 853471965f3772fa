#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and docker-compose when they
# are missing, start dockerd by hand when it is not running (there is no init system here).
# The Debian client is used explicitly (/usr/bin/docker): another client on PATH may speak a
# newer API than the 20.10 engine.
set -euo pipefail
DOCKER=/usr/bin/docker
if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker-compose ] || ! command -v debootstrap >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose debootstrap
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  mkdir -p /var/log/gatemesh
  nohup /usr/sbin/dockerd >/var/log/gatemesh/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && break
    sleep 1
  done
fi
"$DOCKER" info >/dev/null
