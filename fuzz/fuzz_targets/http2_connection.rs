//! Arbitrary bytes after the HTTP/2 preface on a connection to a Keel
//! server's port (Keel's own HTTP/2: frames, HPACK, flow control, gRPC
//! calls of the builtin health and reflection services, streaming ones
//! included): nothing panics, and the server answers or closes within a
//! bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel::fuzzing::http2_connection(data));
