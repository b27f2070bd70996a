#!/bin/sh
# Print the Debian packages that provide the shared libraries BINARY loads, one per line.
# The Dockerfile's runtime stage installs exactly these, so the package list stays the
# Makefile's DEBIAN_PACKAGES (build stage) and what the binary was linked against (here),
# never a second hand-kept list.   Usage: deploy/runtime-packages.sh build/greenhttp
set -eu
binary=${1:?usage: $0 BINARY}
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  real=$(readlink -f "$lib")
  # Bookworm merged /usr: dpkg may know a library under /lib or /usr/lib, by link or file.
  for path in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do
    if owner=$(dpkg -S "$path" 2>/dev/null); then
      echo "$owner" | sed 's/: .*//; s/, /\n/g' | sed 's/:.*//'
      break
    fi
  done
done | sort -u
