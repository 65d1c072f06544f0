#!/usr/bin/env bash
# Host packages of the container suite (Debian): Docker engine, debootstrap, podman; then the podman
# rlimit configuration podman 4.3 needs on this kind of machine (FACTS: "error setting rlimit" otherwise).
set -euo pipefail
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v podman >/dev/null || need+=(podman catatonit)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
conf=/etc/containers/containers.conf
if ! grep -q default_ulimits "$conf" 2>/dev/null; then
  h=$(ulimit -Hn)
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n' "$h" "$h" | $SUDO tee -a "$conf" >/dev/null
fi
