//! The body of a JSON call as the request of etcd's Range, Watch or
//! LeaseGrant (the first byte picks): nothing panics, and what decodes
//! goes to JSON and back to the same protobuf.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel::fuzzing::json_transcode(data));
