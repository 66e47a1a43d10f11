//! A connection's first bytes through the protocol sniffers (baidu_std,
//! HTTP/2, HTTP/1, a TLS ClientHello): nothing panics, and no prefix
//! decides otherwise than the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel::fuzzing::sniff(data));
