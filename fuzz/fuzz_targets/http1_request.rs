//! Arbitrary bytes as an HTTP/1.1 connection to a Keel server's port (JSON
//! calls of the builtin services, the console pages): nothing panics, and
//! the server answers or closes within a bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel::fuzzing::http1_request(data));
