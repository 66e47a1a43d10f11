#!/usr/bin/env bash
# Makes target/interop-venv: the Python venv, with pinned grpcio and
# grpcio-tools, that the gRPC interop tests run grpcio from, and pinned
# prometheus_client, whose parser reads the console's /metrics.
#
# The venv itself lives in a per-user cache, one per set of pins
# (~/.cache/keel-interop/venv-<hash>), and target/interop-venv links to it,
# so a fresh clone on a used machine (as CI makes) reuses it instead of
# installing again. Idempotent: when the venv already has exactly these
# pins it only checks the link; concurrent callers wait on a lock.
#
#   scripts/interop-venv.sh
#   PYTHON=/usr/bin/python3 scripts/interop-venv.sh   # the base interpreter
#   INTEROP_VENV=/some/path KEEL_INTEROP_CACHE=/some/cache scripts/interop-venv.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
link="${INTEROP_VENV:-$root/target/interop-venv}"
# The versions the interop tests were written against; change them together.
pins=(grpcio==1.76.0 grpcio-tools==1.76.0 protobuf==6.33.1 prometheus-client==0.26.0)
want="${pins[*]}"
if [ -n "${KEEL_INTEROP_CACHE:-}" ]; then
  cache="$KEEL_INTEROP_CACHE"
elif [ -n "${XDG_CACHE_HOME:-}" ] || [ -n "${HOME:-}" ]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/keel-interop"
else
  cache="$root/target/interop-cache"
fi
venv="$cache/venv-$(printf '%s' "$want" | sha256sum | cut -c1-12)"

# Whether $1 is a venv with exactly these pins, each importable.
up_to_date() {
  [ -x "$1/bin/python" ] && [ -f "$1/.keel-interop-pins" ] \
    && [ "$(cat "$1/.keel-interop-pins")" = "$want" ] \
    && "$1/bin/python" -c 'import grpc, grpc_tools.protoc, prometheus_client.parser' 2>/dev/null
}

if [ -L "$link" ] && [ "$(readlink "$link")" = "$venv" ] && up_to_date "$venv"; then
  echo "interop venv ready: $link -> $venv ($want)"
  exit 0
fi

mkdir -p "$cache" "$(dirname "$link")"
exec 9>"$venv.lock"
flock -w 900 9 || { echo "interop-venv: timed out waiting for $venv.lock" >&2; exit 1; }
if ! up_to_date "$venv"; then
  python="${PYTHON:-python3}"
  # Debian ships venv's ensurepip apart, in python3-venv.
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "interop-venv: $python cannot make venvs (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  # A venv without the right stamp is a failed or older attempt: start over.
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input "${pins[@]}"
  echo "$want" >"$venv/.keel-interop-pins"
  echo "interop venv created: $venv ($want)"
fi
# An older layout kept the venv itself at the link's place.
if [ -e "$link" ] && [ ! -L "$link" ]; then
  rm -rf "$link"
fi
ln -sfn "$venv" "$link"
echo "interop venv ready: $link -> $venv ($want)"
