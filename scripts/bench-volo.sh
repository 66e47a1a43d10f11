#!/usr/bin/env bash
# `keel-bench volo`: Keel's gRPC echo (server and client) against volo-grpc's
# (CloudWeGo), side by side in one run. Builds the volo peer (peers/volo, a
# program outside the workspace: volo-grpc and its code generator are about
# 270 crates, so the tests never build them) into target/volo-peer, then
# runs the benchmark; arguments go to `keel-bench volo`.
#
#   scripts/bench-volo.sh                  # 3 rounds of 2 s runs
#   scripts/bench-volo.sh --seconds 1 --rounds 5
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release -q --manifest-path peers/volo/Cargo.toml --target-dir target/volo-peer
cargo build --release -q -p keel-bench
exec "${CARGO_TARGET_DIR:-target}/release/keel-bench" volo --peer target/volo-peer/release/keel-volo-peer "$@"
