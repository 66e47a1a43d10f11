//! Arbitrary bytes from a server on an HTTP/2 connection Keel's gRPC
//! client opened (frames, HPACK, flow control, GOAWAY, resets, settings),
//! with a unary and a streaming call on it: nothing panics, and both calls
//! end, answered or failed, within a bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel::fuzzing::http2_client(data));
