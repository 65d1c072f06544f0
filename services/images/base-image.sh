#!/usr/bin/env bash
# The project's own base image, no registry: a Debian bookworm minbase root filesystem made by debootstrap,
# trimmed (docs, locales, apt lists) and imported into the engine.
#   services/images/base-image.sh NAME [EXTRA_DEBIAN_PACKAGES,...]
# semforge-base:bookworm     python3.11 + venv + CA certificates (translate/training)
# semforge-base-ocr:bookworm + tesseract-ocr (the CPU services: scale-bar OCR, semforge.analysis._scalebar)
# semforge-base-gl:bookworm  + the X/GL libraries Blender (bpy) loads even headless (render)
set -euo pipefail
name=$1; extra=${2:-}
if docker image inspect "$name" >/dev/null 2>&1 && [ -z "${REBUILD:-}" ]; then echo "$name exists"; exit 0; fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/semforge-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
include=python3.11,python3-venv,ca-certificates${extra:+,$extra}
debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
       "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
# the unprivileged user every semforge container runs as (uid/gid 10001, no login shell, home /tmp)
echo 'semforge:x:10001:10001:semforge:/tmp:/usr/sbin/nologin' >>"$root/etc/passwd"
echo 'semforge:x:10001:' >>"$root/etc/group"
tar --numeric-owner -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$name"
docker image ls "$name"
