#!/usr/bin/env bash
# Build the project's images with the local Docker engine, no registry:  services/images/build-images.sh [cpu render torch]
# base image (debootstrap) -> host wheelhouse -> services/Dockerfile. Sizes are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${TAG:-$(python3 -c "import re;print(re.search(r'__version__ = \"(.+)\"', open('services/semforge/__init__.py').read())[1])")}
kinds=("${@:-cpu}")
services/images/dockerd.sh
for kind in "${kinds[@]}"; do
  case $kind in
    # the CPU services read scale bars with Tesseract OCR (semforge.analysis._scalebar): Debian's tesseract-ocr
    cpu) base=semforge-base-ocr:bookworm; services/images/base-image.sh "$base" tesseract-ocr ;;
    torch) base=semforge-base:bookworm; services/images/base-image.sh "$base" ;;
    render) base=semforge-base-gl:bookworm
            services/images/base-image.sh "$base" libx11-6,libxrender1,libxi6,libxkbcommon0,libsm6,libxext6,libxfixes3,libgl1,libglx0,libglvnd0 ;;
    *) echo "unknown image kind $kind (cpu, render, torch)" >&2; exit 2 ;;
  esac
  services/images/wheelhouse.sh "$kind"
  docker build -q -f services/Dockerfile --build-arg BASE="$base" --build-arg WHEELS="$kind" \
    -t "semforge-$kind:$TAG" -t "semforge-$kind:latest" .
done
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^semforge' | sort
