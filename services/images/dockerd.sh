#!/usr/bin/env bash
# Start a Docker engine if none answers (CI machines have no systemd): dockerd in the background, log in out/.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd missing: apt-get install -y docker.io" >&2; exit 1; }
mkdir -p out
nohup dockerd >out/dockerd.log 2>&1 &
echo $! >out/dockerd.pid
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "dockerd did not start; see out/dockerd.log" >&2; tail -20 out/dockerd.log >&2; exit 1
