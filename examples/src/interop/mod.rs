//! gRPC's interop tests (`doc/interop-test-descriptions.md` in gRPC's
//! repository), in Keel: the `grpc.testing.TestService` every interop
//! server implements ([`server::TestServer`]) and the cases an interop
//! client runs against one ([`client::run`]). The `interop_server` and
//! `interop_client` programs are thin wrappers around these, with the flags
//! and exit codes of gRPC's own interop programs, so either side can be
//! paired with grpcio, grpc-go or grpc-java.
//!
//! ```text
//!   interop_client --test_case NAME ──► any gRPC server of TestService
//!   any gRPC client of TestService ──► interop_server --port N
//! ```
//!
//! Where Keel's API cannot express what a case checks, the code says so
//! where it happens (compression flags of single messages, trailing
//! metadata of unary calls); the rest of the case still runs.

pub mod client;
pub mod server;

/// The metadata key a server echoes in its initial metadata (headers).
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// The binary metadata key a server echoes in its trailing metadata.
pub const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in standard base64 with padding: how gRPC sends the value of a
/// `-bin` metadata key (Keel's metadata carries such values encoded).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of a base64 `-bin` metadata value, padded or not (gRPC
/// implementations send both); `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    // Leftover bits must be padding zeros of a whole number of bytes.
    (bits < 6 && acc & ((1 << bits) - 1) == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::{base64_decode, base64_encode};

    #[test]
    fn base64_round_trips_with_and_without_padding() {
        for bytes in [
            &b""[..],
            b"\xab",
            b"\xab\xab",
            b"\xab\xab\xab",
            b"hello world",
        ] {
            let text = base64_encode(bytes);
            assert_eq!(base64_decode(&text).as_deref(), Some(bytes), "{text}");
            let bare = text.trim_end_matches('=');
            assert_eq!(base64_decode(bare).as_deref(), Some(bytes), "{bare}");
        }
        assert_eq!(base64_encode(b"\xab\xab\xab"), "q6ur");
        assert_eq!(base64_encode(b"hi"), "aGk=");
        assert_eq!(base64_decode("not base64!"), None);
    }
}
