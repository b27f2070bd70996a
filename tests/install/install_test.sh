#!/usr/bin/env bash
# Installs the build tree $1 into a temporary prefix, then builds tests/install/consumer the three
# ways a user would: find_package(greenhttp) from CMake, pkg-config from a plain g++ line, and
# add_subdirectory() of this checkout. Each program is run and must answer GET /hello/:name,
# then exit 0 on /quit.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/consumer" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null

run_consumer() {  # $1: binary
  # A file of its own, made empty before the program starts: the background job opens it in
  # the child, so a reused file could still show the previous program's port to the loop.
  local out pid port=""
  out=$(mktemp "$work/out.XXXXXX")
  "$1" >"$out" 2>&1 & pid=$!
  for _ in $(seq 1 200); do  # the port line, under a 20 s deadline
    port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$out")
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || { cat "$out"; echo "consumer exited early"; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { kill $pid; echo "consumer printed no port"; exit 1; }
  body=$(curl -sS --max-time 10 "http://127.0.0.1:$port/hello/green")
  [ "$body" = "hello green" ] || { kill $pid; echo "unexpected body: '$body'"; exit 1; }
  curl -sS --max-time 10 "http://127.0.0.1:$port/quit" >/dev/null
  wait $pid || { echo "consumer exited $?"; exit 1; }
  echo "ok: $1 answered on $port and exited 0"
}

# CMake: find_package(greenhttp CONFIG REQUIRED).
cmake -S "$src" -B "$work/cmake-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
run_consumer "$work/cmake-build/consumer"

# pkg-config.
PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" \
  g++ -O1 -o "$work/consumer-pc" "$src/main.cpp" $(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs greenhttp)
run_consumer "$work/consumer-pc"

# add_subdirectory() of the checkout (builds the two libraries again, in the consumer's tree).
cmake -S "$src" -B "$work/subdir-build" -DCMAKE_BUILD_TYPE=Release \
  -DGREENHTTP_SOURCE_DIR="$(cd "$src/../../.." && pwd)" >/dev/null
cmake --build "$work/subdir-build" -j "${JOBS:-2}" --target consumer >/dev/null
run_consumer "$work/subdir-build/consumer"
