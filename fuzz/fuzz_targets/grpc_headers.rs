//! gRPC headers and trailers as a peer sends them (`name: value` lines),
//! through Keel's readers of metadata, `grpc-status`/`grpc-message`/
//! `keel-code`, `grpc-encoding` and `traceparent`: nothing panics, a status
//! written back and read again is the same, and so is metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel::fuzzing::grpc_headers(data));
