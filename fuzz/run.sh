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
#   grpc_headers      Keel's readers of gRPC metadata, status, encoding and
#                     trace headers; statuses and metadata round-trip
#   json_transcode    JSON calls' bodies as protobuf messages (keel's proto3
#                     JSON mapping); what decodes round-trips
#   http1_request     bytes as an HTTP/1.1 connection to a server (JSON calls,
#                     the console); answered or closed within a bound
#   sniff             a connection's first bytes: baidu_std, HTTP/2, HTTP/1,
#                     TLS ClientHello; prefixes agree with the whole
#   http2_connection  bytes after the preface on an HTTP/2 connection to a
#                     server (Keel's own HTTP/2 and gRPC); answered or
#                     closed within a bound
#   http2_client      a server's bytes on an HTTP/2 connection Keel's gRPC
#                     client opened, with a unary and a streaming call on
#                     it; both end within a bound
#   hpack_decode      HTTP/2 header blocks (keel_wire::hpack) on one
#                     connection: a list limit never desyncs the table, and
#                     what decodes re-encodes and decodes to the same fields
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
  targets=(baidu_std_decode protowire grpc_framing grpc_headers json_transcode http1_request http2_connection http2_client sniff hpack_decode)
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

seed_grpc_headers() {
  local corpus=$1
  printf 'grpc-status: 14\ngrpc-message: server%%20stopping\nkeel-code: 2004\nx-user: alice\n' >"$corpus/status"
  printf 'grpc-status: 3\ngrpc-status-details-bin: CAMSBGJhZCE\nx-bin: AAEC\ngrpc-encoding: gzip\n' >"$corpus/details"
  printf 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nauthorization: Bearer x\n' >"$corpus/trace"
  echo "seeded 3 header sets"
}

seed_json_transcode() {
  local corpus=$1
  printf '\x00{"key":"YQ==","rangeEnd":"Yg==","limit":"10","sortOrder":"DESCEND","keysOnly":true}' >"$corpus/range"
  printf '\x01{"createRequest":{"key":"YQ==","startRevision":"5","filters":["NOPUT"]}}' >"$corpus/watch"
  printf '\x02{"TTL":"10","ID":"-1"}' >"$corpus/lease"
  echo "seeded 3 JSON bodies"
}

seed_http1_request() {
  local corpus=$1
  printf 'GET /status?format=json HTTP/1.1\r\nHost: x\r\n\r\n' >"$corpus/status"
  printf 'POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\nx-timeout-ms: 50\r\n\r\n{"service":""}' >"$corpus/json-call"
  printf 'GET /vars?q=server HTTP/1.1\r\n\r\nGET /rpcz HTTP/1.1\r\n\r\n' >"$corpus/pipelined"
  printf 'POST /flags/max_concurrency HTTP/1.1\r\nContent-Length: 7\r\n\r\nvalue=8' >"$corpus/flag"
  echo "seeded 4 requests"
}

seed_http2_connection() {
  # SETTINGS, then a health Check (HEADERS with literal fields, an empty
  # message with END_STREAM); and a health Watch with a 50 ms deadline,
  # a 10-byte window, a WINDOW_UPDATE and a RST_STREAM.
  local corpus=$1
  write_hex "$corpus/check" 00000004000000000000007a01040000000100073a6d6574686f6404504f535400073a736368656d65046874747000053a706174681c2f677270632e6865616c74682e76312e4865616c74682f436865636b000a3a617574686f726974790178000c636f6e74656e742d74797065106170706c69636174696f6e2f677270630002746508747261696c6572730000050001000000010000000000
  write_hex "$corpus/watch" 00000604000000000000040000000a00007f01040000000300073a6d6574686f6404504f535400073a736368656d65046874747000053a706174681c2f677270632e6865616c74682e76312e4865616c74682f5761746368000a3a617574686f726974790178000c636f6e74656e742d74797065106170706c69636174696f6e2f67727063000c677270632d74696d656f75740335306d00000500010000000300000000000000040800000000030000006400000403000000000300000008
  echo "seeded 2 connections"
}

seed_http2_client() {
  # A server's answer to the unary call on stream 1: SETTINGS, HEADERS
  # (:status 200, indexed), an empty message, trailers (grpc-status: 0, a
  # literal); and the streaming call's on stream 3, with a WINDOW_UPDATE,
  # a PING and a GOAWAY after it.
  local corpus=$1
  write_hex "$corpus/unary" 00000004000000000000000101040000000188000005000000000001000000000000000f010500000001000b677270632d7374617475730130
  write_hex "$corpus/streaming" 00000004000000000000000101040000000388000005000000000003000000000000000f010500000003000b677270632d73746174757301300000040800000000000000010000000806000000000070696e67706f6e670000080700000000000000000300000000
  echo "seeded 2 answers"
}

seed_sniff() {
  local corpus=$1
  printf 'PRPC\x00\x00\x00\x10\x00\x00\x00\x08' >"$corpus/baidu_std"
  printf 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' >"$corpus/h2"
  printf 'GET / HTTP/1.1\r\n' >"$corpus/http1"
  printf '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' >"$corpus/tls"
  echo "seeded 4 openings"
}

seed_hpack_decode() {
  # RFC 7541's example connections (Appendix C.3, C.4 and C.6), after the
  # two control bytes the target reads first: 00, the byte between blocks
  # (no block here contains one), then ff (no header list limit) or 02 (a
  # 32-byte limit, which the first request already passes). The responses
  # assume a 256-byte table, so they start with a size update to 256.
  local corpus=$1
  write_hex "$corpus/requests" 00ff828684410f7777772e6578616d706c652e636f6d00828684be58086e6f2d636163686500828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565
  write_hex "$corpus/requests-huffman" 00ff828684418cf1e3c2e5f23a6ba0ab90f4ff00828684be5886a8eb10649cbf00828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf
  write_hex "$corpus/requests-limited" 0002828684410f7777772e6578616d706c652e636f6d00828684be58086e6f2d636163686500828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565
  write_hex "$corpus/responses-huffman" 00ff3fe101488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3004883640effc1c0bf0088c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007
  echo "seeded 4 connections"
}

for target in "${targets[@]}"; do
  if ! declare -F "seed_$target" >/dev/null; then
    echo "unknown fuzz target $target; the targets are baidu_std_decode, protowire, grpc_framing, grpc_headers, json_transcode, http1_request, http2_connection, http2_client, sniff and hpack_decode" >&2
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
