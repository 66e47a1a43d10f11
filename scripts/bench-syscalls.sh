#!/usr/bin/env bash
# Syscalls per call on each side of a baidu_std echo at 1 connection x 128
# and 2 connections x 64 calls in flight: Keel's echo_server and `keel bench`
# (Keel's client), each counted by `perf stat -e raw_syscalls:sys_enter`
# over its whole life (start-up included, a few hundred syscalls against
# hundreds of thousands), divided by the calls made.
#
#   scripts/bench-syscalls.sh                 # 600,000 calls per shape
#   CALLS=200000 NO_BUILD=1 scripts/bench-syscalls.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
calls="${CALLS:-600000}"
command -v perf >/dev/null || { echo "needs perf (Debian: linux-perf)" >&2; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
  (cd "$root" && cargo build --release -q -p keel-cli -p keel-examples --bin keel --bin echo_server)
fi
work="$(mktemp -d)"
server=
stop_server() { # SIGINT: echo_server stops gracefully, and perf prints its count
  if [ -n "$server" ]; then
    kill -INT "$server" 2>/dev/null || true
  fi
}
trap 'stop_server; wait 2>/dev/null || true; rm -rf "$work"' EXIT
count() { sed -n 's/^\([0-9]*\),,raw_syscalls:sys_enter.*/\1/p' "$1"; }

printf '%-6s  %10s  %14s  %14s\n' shape QPS "server sys/call" "client sys/call"
for shape in 1x128 2x64; do
  conns="${shape%x*}"; per="${shape#*x}"
  perf stat -e raw_syscalls:sys_enter -x, -o "$work/server" -- \
    "$bin/echo_server" --addr 127.0.0.1:0 >"$work/out" 2>&1 &
  perf_pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/out" && break
    sleep 0.1
  done
  addr="$(sed -n 's/^echo_server listening on //p' "$work/out")"
  [ -n "$addr" ] || { echo "echo_server did not start" >&2; exit 1; }
  server="$(pgrep -P "$perf_pid" -x echo_server)"
  perf stat -e raw_syscalls:sys_enter -x, -o "$work/client" -- \
    "$bin/keel" bench "$addr" example.EchoService/Echo -d '{"message":"0123456789abcdef"}' \
    --connections "$conns" --concurrency "$((conns * per))" --total "$calls" --format json \
    >"$work/bench" 2>/dev/null
  stop_server
  wait "$perf_pid" || true
  server=
  qps="$(sed -n 's/.*"qps":\([0-9.]*\).*/\1/p' "$work/bench")"
  done_calls="$(sed -n 's/.*"calls":\([0-9]*\).*/\1/p' "$work/bench")"
  printf '%-6s  %10.0f  %14.2f  %14.2f\n' "$shape" "$qps" \
    "$(awk -v s="$(count "$work/server")" -v c="$done_calls" 'BEGIN {print s / c}')" \
    "$(awk -v s="$(count "$work/client")" -v c="$done_calls" 'BEGIN {print s / c}')"
done
echo "target (issue 15): 2x64 at most 0.3 syscalls per call"
