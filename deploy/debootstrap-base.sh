#!/usr/bin/env bash
# Make the two Debian base images the Dockerfile names, debian:bookworm and debian:bookworm-slim,
# on this machine with debootstrap, for machines that reach a Debian mirror but no container
# registry. Needs root (debootstrap chroots) and the Debian package `debootstrap`.
#
#   deploy/debootstrap-base.sh ENGINE        ENGINE: podman or docker
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian, the mirror this project's
# machines use), DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
#
# What the images are, next to Docker Hub's (which Debian builds with debuerreotype from the
# same `debootstrap --variant=minbase`):
# - debian:bookworm      = minbase bookworm; apt sources for bookworm, bookworm-updates and
#   bookworm-security in /etc/apt/sources.list.d/debian.sources; no package lists, apt caches,
#   logs, machine-id or resolv.conf left in the image; apt fetches no translations and keeps no
#   .debs (the same apt settings as Docker Hub's images); CMD ["bash"].
# - debian:bookworm-slim = the same, less what Docker Hub's slim drops: dpkg is told not to
#   install /usr/share/doc (copyright files excepted), man, info, locale, lintian and linda
#   files, and those already installed are deleted.
# Both are tagged docker.io/library/debian:..., the names a pull would give them, so that
# `FROM debian:bookworm` finds them and the engine never tries the registry. The engine's image
# store is the cache: deploy/build-image.sh calls this only when they are missing there.
set -euo pipefail

engine=${1:?usage: $0 podman|docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm

[ "$(id -u)" = 0 ] || { echo "debootstrap-base: debootstrap needs root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "debootstrap-base: install debootstrap" >&2; exit 2; }

work=$(mktemp -d /var/tmp/greenhttp-debootstrap.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "debootstrap-base: debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  echo "debootstrap-base: debootstrap failed" >&2
  exit 1
}

# The apt configuration of Docker Hub's Debian images: no translations, no cached .debs.
cat >"$root/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# What the build leaves behind and an image must not carry: the engine provides resolv.conf,
# hostname and hosts at run time; machine-id is made empty as systemd expects in images.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/tmp/* "$root"/var/tmp/*
find "$root/var/log" -type f -delete
: >"$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/etc/hostname"

import() {  # $1: tag. The root file system, owners by number, becomes a one-layer image.
  tar --numeric-owner --xattrs -C "$root" -c . |
    "$engine" import --change 'CMD ["bash"]' - "docker.io/library/debian:$1" >/dev/null
  echo "debootstrap-base: made docker.io/library/debian:$1"
}
import "$suite"

# Slim: what Docker Hub's slim variant leaves out, for this install and all later ones.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/info/* "$root"/usr/share/linda/* "$root"/usr/share/lintian/overrides/* \
       "$root"/usr/share/locale/* "$root"/usr/share/man/*
import "$suite-slim"
