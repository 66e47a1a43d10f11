#!/usr/bin/env bash
# Fuzzes keel-wire for ${FUZZ_SECONDS:-60} seconds IN TOTAL, split evenly
# between the targets (at least 1 second each), so a CI budget stays the
# budget however many targets there are:
#
#   baidu_std_decode  frames and metas: every decoder of a frame, against
#                     each other and against prost
#   protowire         the protobuf wire reader (keel_wire::protowire), against
#                     prost's varint, key and unknown-field decoding
#   grpc_framing      gRPC's message prefix, grpc-timeout, grpc-message and
#                     base64 (keel_wire::grpc), against each other
#
#   fuzz/run.sh                      every target, FUZZ_SECONDS split between them
#   fuzz/run.sh protowire            one target, for all of FUZZ_SECONDS
#
# Installs cargo-fuzz if it is missing, seeds each corpus from the brpc
# captures in crates/keel-wire/tests/vectors, and runs libFuzzer. cargo-fuzz
# needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain build
# it. A crash leaves its input in fuzz/artifacts/<target>/ and fails the run
# (the remaining targets do not run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
total="${FUZZ_SECONDS:-60}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(baidu_std_decode protowire grpc_framing)
fi
each=$((total / ${#targets[@]}))
if [ "$each" -lt 1 ]; then
  each=1
fi

# The captured frames, one hex line each (the line after "# raw hex (one
# line):" in the vector files).
frames() {
  local file
  for file in ../crates/keel-wire/tests/vectors/*.hex ../crates/keel-wire/tests/vectors/*.txt; do
    awk 'take { print; take = 0 } /^# raw hex \(one line\):/ { take = 1 }' "$file"
  done
}

# Writes hex string $2 as the bytes of file $1.
write_hex() {
  printf '%b' "$(printf '%s' "$2" | sed 's/../\\x&/g')" >"$1"
}

seed_baidu_std_decode() {
  # Each frame, after the control byte the target reads first (0x3f: feed
  # in 64-byte pieces).
  local corpus=$1 n=0 hex
  while IFS= read -r hex; do
    n=$((n + 1))
    write_hex "$corpus/seed-$n" "3f$hex"
  done < <(frames)
  echo "seeded $n frames from the brpc captures"
}

seed_protowire() {
  # Each frame's body (its RpcMeta first), past the 12-byte header; and
  # proto2 groups, which the captures lack: group 1 { 2: 1, group 3
  # { 1: "x" } }, an unterminated group, a mismatched end tag.
  local corpus=$1 n=0 hex
  while IFS= read -r hex; do
    n=$((n + 1))
    write_hex "$corpus/seed-$n" "${hex:24}"
  done < <(frames)
  write_hex "$corpus/group-nested" 0b10011b0a01781c0c
  write_hex "$corpus/group-open" 0b1001
  write_hex "$corpus/group-mismatch" 0b14
  echo "seeded $n frame bodies and 3 groups"
}

seed_grpc_framing() {
  # Two messages (one empty), a timeout and a percent-encoded message.
  local corpus=$1
  write_hex "$corpus/messages" 07000000000300000001616263
  printf '\x01250m' >"$corpus/timeout"
  printf '\x0150%%25 off%%0A' >"$corpus/message"
  echo "seeded 3 gRPC inputs"
}

for target in "${targets[@]}"; do
  if ! declare -F "seed_$target" >/dev/null; then
    echo "unknown fuzz target $target; the targets are baidu_std_decode, protowire and grpc_framing" >&2
    exit 2
  fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  "seed_$target" "$corpus"
  echo "fuzzing $target for $each seconds"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$each"
done
