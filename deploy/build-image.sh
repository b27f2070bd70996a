#!/usr/bin/env bash
# Build the top-level Dockerfile into IMAGE (default greenhttp:latest); `make image` runs this.
#
#   deploy/build-image.sh [IMAGE]
#
# The engine: $CONTAINER_ENGINE if set, else docker where its daemon answers, else podman
# (Debian's; `make deps-podman`). podman builds with --isolation=chroot, which needs neither
# cgroup delegation nor user namespaces, and --format docker, without which the OCI format drops
# HEALTHCHECK. The Debian base images come from the engine's store if there, else from the
# registry, else (no registry reachable) from deploy/debootstrap-base.sh, once: its images stay
# in the store, so the next build does not debootstrap again.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-greenhttp:latest}

if [ -n "${CONTAINER_ENGINE:-}" ]; then engine=$CONTAINER_ENGINE
elif docker info >/dev/null 2>&1; then engine=docker
elif command -v podman >/dev/null; then engine=podman
else echo "build-image: neither a docker daemon nor podman: run \`make deps-podman\`" >&2; exit 2
fi

missing=""
for tag in bookworm bookworm-slim; do
  ref=docker.io/library/debian:$tag
  "$engine" image inspect "$ref" >/dev/null 2>&1 && continue
  # A registry that does not answer should fail the pull quickly (no DNS, refused); one that
  # drops packets is given two minutes.
  if timeout 120 "$engine" pull -q "$ref" >/dev/null 2>&1; then
    echo "build-image: pulled $ref"
  else
    missing="$missing $tag"
  fi
done
if [ -n "$missing" ]; then
  echo "build-image: no registry answered for debian:{${missing# }}; making both with debootstrap"
  deploy/debootstrap-base.sh "$engine"
  echo "build-image: base images made in ${SECONDS}s"
fi

start=$SECONDS
case $engine in
  podman) (set -x; podman build --isolation=chroot --format docker -t "$image" .) ;;
  *)      (set -x; "$engine" build -t "$image" .) ;;
esac
echo "build-image: $image built by $engine in $((SECONDS - start))s"
