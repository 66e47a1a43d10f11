//! Arbitrary bytes through gRPC's framing in `keel_wire::grpc`, the code a
//! gRPC peer's bytes and headers reach first:
//!
//! - the input as a stream of length-prefixed messages, fed in pieces of a
//!   size the first byte picks: `split_message` yields exactly the messages
//!   `parse_prefix` announces, in order, and fails exactly where a prefix is
//!   bad or over the limit, never reserving more than a message announced;
//! - the input as header text: `parse_timeout` accepts only what
//!   `write_timeout` could have written (and what it accepts writes back no
//!   shorter), `decode_message` never panics and inverts `encode_message`,
//!   and `base64_decode` inverts `base64_encode`.
//!
//! Nothing may panic.
#![no_main]

use bytes::BytesMut;
use keel_wire::grpc::{
    PREFIX_LEN, TIMEOUT_MAX_LEN, base64_decode, base64_encode, decode_message, encode_message,
    parse_prefix, parse_timeout, split_message, write_timeout,
};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    // Messages, fed in pieces.
    let piece = usize::from(control % 64) + 1;
    let mut buf = BytesMut::new();
    let mut expected = Vec::new();
    let mut rest = input;
    let failure = loop {
        match parse_prefix(rest, MAX) {
            Ok(Some((_, len))) if rest.len() >= PREFIX_LEN + len => {
                expected.push(&rest[PREFIX_LEN..PREFIX_LEN + len]);
                rest = &rest[PREFIX_LEN + len..];
            }
            Ok(_) => break false,
            Err(_) => break true,
        }
    };
    let mut got = Vec::new();
    let mut failed = false;
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match split_message(&mut buf, MAX) {
                Ok(Some(message)) => got.push(message.data),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
        assert!(buf.capacity() <= 2 * (PREFIX_LEN + MAX) + 2 * piece + 64);
    }
    assert_eq!(got.len(), expected.len().min(got.len()));
    for (a, b) in got.iter().zip(&expected) {
        assert_eq!(&a[..], *b);
    }
    if !failed {
        assert_eq!(got.len(), expected.len());
    }
    assert_eq!(failed, failure);

    // Header values.
    let text = String::from_utf8_lossy(input);
    if let Some(timeout) = parse_timeout(&text) {
        let mut out = [0; TIMEOUT_MAX_LEN];
        let len = write_timeout(timeout, &mut out);
        let back = parse_timeout(std::str::from_utf8(&out[..len]).expect("ascii"))
            .expect("what write_timeout writes parses");
        assert!(back >= timeout);
    }
    let _ = decode_message(&text);
    assert_eq!(decode_message(&encode_message(&text)), text);
    if let Some(bytes) = base64_decode(&text) {
        let _ = base64_encode(&bytes);
    }
    assert_eq!(base64_decode(&base64_encode(input)).as_deref(), Some(input));
});
