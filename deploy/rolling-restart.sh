#!/usr/bin/env bash
# Prove that a rolling restart behind HAProxy loses no request.
#
# Starts two server instances and HAProxy (deploy/haproxy/haproxy.cfg.in), all on 127.0.0.1,
# puts wrk load on HAProxy, and meanwhile restarts the instances one at a time: SIGTERM, wait
# for the drain to finish (the process exits), start it again, wait until HAProxy's health
# check has it UP, then the other one. Passes when wrk saw no socket error and no non-2xx
# response. Exit status 0 = pass, 1 = fail, 2 = could not run.
#
#   deploy/rolling-restart.sh [--backend greenhttp|go] [--duration SECONDS] [--connections N]
#                             [--sleep-ms MS]
#
# --sleep-ms MS sends the load of loadtest/wrk/mix.lua instead of plain GETs: one request in
# eight is /sleep?ms=MS, so requests are in flight when SIGTERM arrives and the drain must let
# them finish (a cut one shows up as a wrk read error).
# --backend go runs the same procedure against the Go net/http peer (loadtest/peers/go), which
# drains the same way (/readyz 503 on SIGTERM, then http.Server.Shutdown).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
backend=greenhttp
duration=20
connections=50
sleep_ms=0

while [ $# -gt 0 ]; do
  case $1 in
    --backend) backend=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --sleep-ms) sleep_ms=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "rolling-restart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[rolling-restart %5.1fs] %s\n' "$(( $(date +%s%N) / 1000000 - start_ms ))e-3" "$*"; }
die() { echo "rolling-restart: $*" >&2; exit 2; }
start_ms=$(( $(date +%s%N) / 1000000 ))
ulimit -n "$(ulimit -Hn)"  # two instances, HAProxy and wrk each get the hard limit

for tool in haproxy wrk curl python3; do
  command -v "$tool" >/dev/null || die "\`$tool\` is not installed: run \`make deps\`"
done

case $backend in
  greenhttp)
    server_bin=$repo/$build/greenhttp
    [ -x "$server_bin" ] || die "$server_bin is not built: run \`make build\`"
    server_args=(--threads 1 --access-log off) ;;
  go)
    command -v go >/dev/null || die "\`go\` is not installed: run \`make deps\`"
    server_bin=$repo/$build/loadtest/gopeer
    mkdir -p "$(dirname "$server_bin")"
    (cd "$repo/loadtest/peers/go" && GOPROXY=off GOFLAGS=-mod=mod go build -o "$server_bin" .) \
      || die "go build of loadtest/peers/go failed"
    server_args=(--threads 1) ;;
  *) die "--backend must be greenhttp or go" ;;
esac

tmp=$(mktemp -d /tmp/greenhttp-rolling.XXXXXX)
declare -a pids=()
haproxy_pid=""
wrk_pid=""
cleanup() {
  # Only the processes this script started, by their ids.
  for pid in "${pids[@]}" $haproxy_pid $wrk_pid; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Free ports below the ephemeral range (this machine is shared: never assume a fixed port).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
need, port, found = int(sys.argv[1]), 28500, []
while len(found) < need:
    port += 1
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    found.append(port)
print(" ".join(map(str, found)))
PY
}
read -r lb_port stats_port port1 port2 <<<"$(free_ports 4)"
ports=("" "$port1" "$port2")

start_instance() {  # $1: instance number
  local i=$1 port=${ports[$1]}
  "$server_bin" --listen "127.0.0.1:$port" "${server_args[@]}" >>"$tmp/instance$i.log" 2>&1 &
  pids[$i]=$!
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then return 0; fi
    kill -0 "${pids[$i]}" 2>/dev/null || die "instance $i exited at start: $(tail -3 "$tmp/instance$i.log")"
    sleep 0.1
  done
  die "instance $i did not answer /readyz within 10 s"
}

# The state HAProxy's health checks give server g$1 (UP, DOWN, ...), from the stats CSV.
haproxy_state() {
  curl -fsS "http://127.0.0.1:$stats_port/stats;csv" 2>/dev/null | awk -F, -v sv="g$1" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $1 == "greenhttp" && $2 == sv { print $col["status"] }'
}

wait_state() {  # $1 instance, $2 wanted state, $3 timeout in tenths of a second
  for _ in $(seq "$3"); do
    [ "$(haproxy_state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

start_instance 1
start_instance 2
servers=""
for i in 1 2; do servers+="    server g$i 127.0.0.1:${ports[$i]}"$'\n'; done
sed -e "s#@PORT@#$lb_port#; s#@STATS_PORT@#$stats_port#; s#@PREFIX@#$tmp#" \
    -e "/@SERVERS@/{
r /dev/stdin
d
}" "$repo/deploy/haproxy/haproxy.cfg.in" <<<"${servers%$'\n'}" >"$tmp/haproxy.cfg"
haproxy -c -q -f "$tmp/haproxy.cfg" || die "haproxy rejected $tmp/haproxy.cfg"
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
haproxy_pid=$!
for i in 1 2; do
  wait_state "$i" UP 50 || die "HAProxy never saw instance $i UP: $(tail -3 "$tmp/haproxy.log")"
done
say "$backend x2 on 127.0.0.1:$port1 and :$port2 behind HAProxy on :$lb_port (stats :$stats_port)"

load=("http://127.0.0.1:$lb_port/plaintext")
if [ "$sleep_ms" -gt 0 ]; then
  load=(-s "$repo/loadtest/wrk/mix.lua" "http://127.0.0.1:$lb_port/" -- "$sleep_ms")
fi
wrk -t1 -c"$connections" -d"${duration}s" --latency "${load[@]}" >"$tmp/wrk.out" 2>&1 &
wrk_pid=$!
say "wrk -t1 -c$connections -d${duration}s through HAProxy: ${load[*]}"
sleep 2

for i in 1 2; do
  say "instance $i (pid ${pids[$i]}): SIGTERM"
  t0=$(date +%s%N)
  kill -TERM "${pids[$i]}"
  if wait_state "$i" DOWN 30; then
    say "instance $i: HAProxy marked it DOWN ($(( ($(date +%s%N) - t0) / 1000000 )) ms after SIGTERM)"
  else
    say "instance $i: HAProxy did not mark it DOWN within 3 s"
  fi
  status=0
  wait "${pids[$i]}" || status=$?
  say "instance $i: drained and exited with status $status after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  [ "$status" = 0 ] || echo "rolling-restart: instance $i exited with $status after SIGTERM" >&2
  start_instance "$i"
  wait_state "$i" UP 50 || die "HAProxy never saw restarted instance $i UP"
  say "instance $i: restarted (pid ${pids[$i]}), UP in HAProxy again"
  kill -0 "$wrk_pid" 2>/dev/null || die "wrk finished before the restart of instance $i was done: raise --duration"
  sleep 1
done

wrk_status=0
wait "$wrk_pid" || wrk_status=$?
wrk_pid=""
sed 's/^/    /' "$tmp/wrk.out"
csv=$(curl -fsS "http://127.0.0.1:$stats_port/stats;csv")
retries=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  $1 == "greenhttp" && $2 == "BACKEND" { print "retries " $col["wretr"] ", redispatches " $col["wredis"] ", 5xx from servers " $col["hrsp_5xx"] }' <<<"$csv")
say "HAProxy backend: $retries"

requests=$(awk '/requests in/ { print $1 }' "$tmp/wrk.out")
if [ "$wrk_status" = 0 ] && [ -n "$requests" ] && [ "$requests" -gt 0 ] \
   && ! grep -q -e "Non-2xx" -e "Socket errors" "$tmp/wrk.out"; then
  say "PASS: $requests requests through two rolling restarts, no socket error, no non-2xx response"
  exit 0
fi
say "FAIL: wrk saw errors (above) during the rolling restart"
exit 1
