//! Telling protocols apart by a connection's first bytes.
//!
//! Keel serves baidu_std, HTTP/2 (gRPC) and HTTP/1 on one port, like brpc.
//! The server peeks at the first bytes of each new connection and hands it to
//! the protocol they announce. Every protocol starts with a fixed token, and no
//! token is a prefix of another, so the decision is exact: once the bytes match
//! a whole token the protocol is known; while they are a proper prefix of some
//! token the server must read more; otherwise nothing Keel speaks starts so.

use crate::baidu_std::MAGIC;

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most bytes [`sniff`] ever needs to decide: the HTTP/2 preface's length.
pub const SNIFF_MAX_LEN: usize = HTTP2_PREFACE.len();

/// The HTTP/1 request-line starts Keel recognises, each with its space.
const HTTP1_METHODS: [&[u8]; 7] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
];

/// What a connection's first bytes say about its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sniff {
    /// Starts with `PRPC`: brpc's baidu_std.
    BaiduStd,
    /// Starts with the whole HTTP/2 preface: HTTP/2 (gRPC or plain).
    Http2,
    /// Starts with an HTTP/1 method and a space (`GET `, `POST `, `PUT `,
    /// `DELETE `, `HEAD `, `OPTIONS `, `PATCH `).
    Http1,
    /// The bytes so far begin one of the above: read more (at most
    /// [`SNIFF_MAX_LEN`] bytes in all are needed) and sniff again.
    NeedMore,
    /// No protocol Keel speaks starts with these bytes.
    Unknown,
}

/// Names the protocol whose token starts `buf`.
///
/// ```
/// use keel_wire::{sniff, Sniff};
/// assert_eq!(sniff(b"PRPC\0\0\0\x10"), Sniff::BaiduStd);
/// assert_eq!(sniff(b"GET /status HTTP/1.1\r\n"), Sniff::Http1);
/// assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Sniff::Http2);
/// assert_eq!(sniff(b"PO"), Sniff::NeedMore);
/// assert_eq!(sniff(b"\x16\x03\x01"), Sniff::Unknown);
/// ```
pub fn sniff(buf: &[u8]) -> Sniff {
    let tokens = [
        (&MAGIC[..], Sniff::BaiduStd),
        (&HTTP2_PREFACE[..], Sniff::Http2),
    ]
    .into_iter()
    .chain(HTTP1_METHODS.iter().map(|m| (*m, Sniff::Http1)));
    let mut need_more = false;
    for (token, protocol) in tokens {
        let n = buf.len().min(token.len());
        if buf[..n] == token[..n] {
            if n == token.len() {
                return protocol;
            }
            need_more = true;
        }
    }
    if need_more {
        Sniff::NeedMore
    } else {
        Sniff::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_tokens_decide() {
        assert_eq!(sniff(b"PRPC"), Sniff::BaiduStd);
        assert_eq!(sniff(HTTP2_PREFACE), Sniff::Http2);
        for m in HTTP1_METHODS {
            assert_eq!(sniff(m), Sniff::Http1, "{}", m.escape_ascii());
            let mut line = m.to_vec();
            line.extend_from_slice(b"/ HTTP/1.1\r\n");
            assert_eq!(sniff(&line), Sniff::Http1);
        }
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        let tokens: Vec<&[u8]> = [&MAGIC[..], &HTTP2_PREFACE[..]]
            .into_iter()
            .chain(HTTP1_METHODS)
            .collect();
        for token in tokens {
            for n in 0..token.len() {
                assert_eq!(
                    sniff(&token[..n]),
                    Sniff::NeedMore,
                    "{}",
                    token[..n].escape_ascii()
                );
            }
        }
    }

    #[test]
    fn near_misses_are_unknown() {
        // Method without its space, lower case, a TLS ClientHello, PRI that is
        // not the preface, and a method Keel does not route.
        for bytes in [
            &b"GETX"[..],
            b"get /",
            b"\x16\x03\x01\x02\x00",
            b"PRI * HTTP/1.1",
            b"CONNECT host:443",
            b"PRPX",
        ] {
            assert_eq!(sniff(bytes), Sniff::Unknown, "{}", bytes.escape_ascii());
        }
    }
}
