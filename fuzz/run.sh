#!/usr/bin/env bash
# Fuzzes keel-wire's baidu_std decoder for ${FUZZ_SECONDS:-60} seconds.
#
# Installs cargo-fuzz if it is missing, seeds the corpus with the brpc
# captures from crates/keel-wire/tests/vectors, and runs libFuzzer. cargo-fuzz
# needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain build it.
# A crash leaves its input in fuzz/artifacts/baidu_std_decode/ and fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${FUZZ_SECONDS:-60}"
target=baidu_std_decode

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Seeds: every captured frame (the line after "# raw hex (one line):"), with
# the control byte the target reads first (0x3f: feed in 64-byte pieces).
corpus="corpus/$target"
mkdir -p "$corpus"
n=0
for file in ../crates/keel-wire/tests/vectors/*.hex ../crates/keel-wire/tests/vectors/*.txt; do
  while IFS= read -r hex; do
    n=$((n + 1))
    printf '%b' "\\x3f$(printf '%s' "$hex" | sed 's/../\\x&/g')" >"$corpus/seed-$n"
  done < <(awk 'take { print; take = 0 } /^# raw hex \(one line\):/ { take = 1 }' "$file")
done
echo "seeded $n frames from the brpc captures"

RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds"
