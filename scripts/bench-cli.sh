#!/usr/bin/env bash
# `keel bench` against the dedicated clients, side by side in one run, on
# one Keel echo_server (brpc's echo service) on loopback:
#
#   baidu_std: keel bench (1 connection x 128) vs the echo_client example
#   gRPC:      keel bench grpc:// (1 connection x 128) vs h2load (Debian's
#              nghttp2-client; skipped when it is not installed)
#
# Runs alternate (client A, client B, A, B, ...) so drift hits both alike;
# prints each run, the medians and the ratio keel bench / peer. The target:
# keel bench reaches at least 90% of echo_client's QPS.
#
#   scripts/bench-cli.sh                       # 3 rounds of 5 s runs
#   SECONDS_PER_RUN=3 ROUNDS=5 scripts/bench-cli.sh
#   NO_BUILD=1 CARGO_TARGET_DIR=/path scripts/bench-cli.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
seconds="${SECONDS_PER_RUN:-5}"
rounds="${ROUNDS:-3}"
inflight="${CONCURRENCY:-128}"
message='hello world, keel'

if [ -z "${NO_BUILD:-}" ]; then
  (cd "$root" && cargo build --release -q -p keel-cli -p keel-examples --bins)
fi

# The server, on a free port; killed (by its PID) when this script exits.
out="$(mktemp)"
"$bin/echo_server" --addr 127.0.0.1:0 >"$out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$out" "${body:-}"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$out" && break
  sleep 0.1
done
addr="$(sed -n 's/^echo_server listening on //p' "$out")"
[ -n "$addr" ] || { echo "echo_server did not start" >&2; exit 1; }

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

keel_bench() { # $1: target
  "$bin/keel" bench "$1" example.EchoService/Echo -d "{\"message\":\"$message\"}" \
    --proto "$root/examples/proto/echo.proto" --concurrency "$inflight" --connections 1 \
    --duration "${seconds}s" --warmup 0.5s --format json 2>/dev/null \
    | sed -n 's/.*"qps":\([0-9.]*\).*/\1/p'
}

echo "echo_server on $addr; $rounds rounds of ${seconds} s runs, 1 connection x $inflight in flight"
echo
echo "baidu_std              QPS"
ours=(); theirs=()
for r in $(seq "$rounds"); do
  q="$("$bin/echo_client" --server "$addr" --concurrency "$inflight" --duration "$seconds" \
        | sed -n 's/.* \([0-9][0-9]*\) QPS.*/\1/p')"
  theirs+=("$q"); printf '  echo_client  #%d  %10.0f\n' "$r" "$q"
  q="$(keel_bench "$addr")"
  ours+=("$q"); printf '  keel bench   #%d  %10.0f\n' "$r" "$q"
done
a="$(printf '%s\n' "${ours[@]}" | median)"; b="$(printf '%s\n' "${theirs[@]}" | median)"
printf '  median: keel bench %.0f, echo_client %.0f, ratio %.2f (target >= 0.90)\n' "$a" "$b" \
  "$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}')"

if command -v h2load >/dev/null; then
  # One gRPC message: no compression, 4-byte length, then EchoRequest
  # (field 1, length-delimited).
  body="$(mktemp)"
  printf '\x00\x00\x00\x00\x13\x0a\x11%s' "$message" >"$body"
  echo
  echo "gRPC                   QPS"
  ours=(); theirs=()
  for r in $(seq "$rounds"); do
    q="$(h2load -c 1 -m "$inflight" -D "$seconds" --warm-up-time=1 -d "$body" \
          -H 'content-type: application/grpc' -H 'te: trailers' \
          "http://$addr/example.EchoService/Echo" 2>/dev/null \
          | sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p')"
    theirs+=("$q"); printf '  h2load       #%d  %10.0f\n' "$r" "$q"
    q="$(keel_bench "grpc://$addr")"
    ours+=("$q"); printf '  keel bench   #%d  %10.0f\n' "$r" "$q"
  done
  a="$(printf '%s\n' "${ours[@]}" | median)"; b="$(printf '%s\n' "${theirs[@]}" | median)"
  printf '  median: keel bench %.0f, h2load %.0f, ratio %.2f\n' "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}')"
else
  echo
  echo "gRPC: h2load not installed (apt-get install nghttp2-client); skipped"
fi
