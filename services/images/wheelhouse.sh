#!/usr/bin/env bash
# Wheels for the images, built on the host (pip inside a build has no CA bundle for PyPI):
#   out/wheelhouse/cpu     semforge (built from this checkout, isolated build: stubs + models inside) + deps
#   out/wheelhouse/render  + bpy (Blender as a Python module; needs numpy<2) and OpenEXR
#   out/wheelhouse/torch   + torch (translate / training)
#   services/images/wheelhouse.sh cpu|render|torch
set -euo pipefail
kind=$1
PY=${PY:-python3}
out=out/wheelhouse/$kind
mkdir -p "$out"
case $kind in
  cpu) reqs=(".[k8s]") ;;   # the kubernetes client: the gateway's Job batch back end (gateway.batchBackend=kubernetes)
  render) reqs=(. "bpy==5.0.1" "numpy>=1.26,<2" "OpenEXR==3.5.3") ;;
  torch) reqs=(".[train]") ;;   # torch/torchvision/smp/timm/onnx as pinned in pyproject.toml
  *) echo "unknown wheelhouse $kind (cpu, render, torch)" >&2; exit 2 ;;
esac
# the image's Python is Debian bookworm's 3.11 (glibc 2.36): wheels for cp311 manylinux
"$PY" -m pip wheel -q --prefer-binary --wheel-dir "$out" "${reqs[@]}"
printf '%s\n' "${reqs[@]}" | sed 's#^\.#semforge#' >"$out/requirements.txt"
du -sh "$out"
