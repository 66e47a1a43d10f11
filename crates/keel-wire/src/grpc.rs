//! gRPC over HTTP/2, the parts that are bytes and strings: the 5-byte
//! message prefix, `grpc-timeout` values and `grpc-message` percent-encoding
//! ([gRPC's HTTP/2 protocol](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)).
//!
//! HTTP/2 itself (frames, HPACK, flow control) is the `h2` crate's; this
//! module is what gRPC puts on top, kept free of I/O so it can be fuzzed.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

/// Length of the prefix before every message: a compressed flag and a
/// big-endian `u32` length.
pub const PREFIX_LEN: usize = 5;

/// The largest message a Keel endpoint accepts by default (grpc-go's 4 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The prefix of a message of `len` bytes.
pub fn prefix(compressed: bool, len: usize) -> [u8; PREFIX_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [u8::from(compressed), len[0], len[1], len[2], len[3]]
}

/// One length-prefixed message cut from a stream's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The compressed flag was set: `data` is in the stream's `grpc-encoding`.
    pub compressed: bool,
    /// The message bytes.
    pub data: Bytes,
}

/// Why a stream's data is not a sequence of gRPC messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A message announces more bytes than the receiver accepts.
    #[error("a message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The compressed flag is neither 0 nor 1.
    #[error("the message prefix has compressed flag {0}, not 0 or 1")]
    BadFlag(u8),
}

/// Cuts the first complete message off `buf`: `Ok(None)` while it is
/// incomplete (read more data into `buf`). The length is checked against
/// `max` as soon as the prefix is in, before its bytes arrive.
///
/// ```
/// use bytes::BytesMut;
/// use keel_wire::grpc::{prefix, split_message};
/// let mut buf = BytesMut::new();
/// buf.extend_from_slice(&prefix(false, 3));
/// buf.extend_from_slice(b"ab");
/// assert_eq!(split_message(&mut buf, 1024), Ok(None));
/// buf.extend_from_slice(b"c");
/// let message = split_message(&mut buf, 1024).unwrap().unwrap();
/// assert_eq!(&message.data[..], b"abc");
/// assert!(buf.is_empty());
/// ```
pub fn split_message(buf: &mut BytesMut, max: usize) -> Result<Option<Message>, MessageError> {
    let Some((compressed, len)) = parse_prefix(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < PREFIX_LEN + len {
        // Room for the rest of this message, at most what it announced.
        buf.reserve(PREFIX_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(PREFIX_LEN);
    Ok(Some(Message {
        compressed,
        data: buf.split_to(len).freeze(),
    }))
}

/// Reads the prefix at the start of `head`: `(compressed, length)`, or
/// `Ok(None)` while fewer than [`PREFIX_LEN`] bytes are in. The length is
/// checked against `max`.
pub fn parse_prefix(head: &[u8], max: usize) -> Result<Option<(bool, usize)>, MessageError> {
    let Some(prefix) = head.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let flag = prefix[0];
    if flag > 1 {
        return Err(MessageError::BadFlag(flag));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > max {
        return Err(MessageError::TooLarge { len, max });
    }
    Ok(Some((flag == 1, len)))
}

/// Reads a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`).
///
/// ```
/// use std::time::Duration;
/// use keel_wire::grpc::parse_timeout;
/// assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_timeout("123456789S"), None);
/// assert_eq!(parse_timeout("5x"), None);
/// ```
pub fn parse_timeout(value: &str) -> Option<Duration> {
    // ASCII only: a unit that is not ASCII is no unit (and would not be a
    // char boundary to split at).
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The longest `grpc-timeout` value: 8 digits and a unit.
pub const TIMEOUT_MAX_LEN: usize = 9;

/// Writes `timeout` as a `grpc-timeout` value (at most 8 digits), rounded
/// up so the server never sees a shorter deadline than the caller's: in
/// milliseconds from one millisecond on (so calls with the same timeout
/// send the same value, which a client can keep and reuse), in the finest
/// unit that fits below that and above 27 hours.
///
/// ```
/// use std::time::Duration;
/// use keel_wire::grpc::format_timeout;
/// assert_eq!(format_timeout(Duration::from_millis(250)), "250m");
/// assert_eq!(format_timeout(Duration::from_micros(249_990)), "250m");
/// assert_eq!(format_timeout(Duration::from_micros(250)), "250u");
/// assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
/// assert_eq!(format_timeout(Duration::from_secs(200_000_000)), "3333334M");
/// ```
pub fn format_timeout(timeout: Duration) -> String {
    let mut buf = [0; TIMEOUT_MAX_LEN];
    let len = write_timeout(timeout, &mut buf);
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// [`format_timeout`] into `buf`, with no allocation: returns the length
/// written.
pub fn write_timeout(timeout: Duration, buf: &mut [u8; TIMEOUT_MAX_LEN]) -> usize {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    // The finest unit whose count fits in 8 digits, but never finer than a
    // millisecond for a timeout of a millisecond or more (nor than a
    // microsecond for one of a microsecond or more).
    let (count, unit) = units
        .into_iter()
        .map(|(per, unit)| (nanos.div_ceil(per), per, unit))
        .find(|&(count, per, _)| {
            count <= MAX
                && (per >= 1_000_000 || nanos < 1_000_000)
                && (per >= 1_000 || nanos < 1_000)
        })
        .map_or((MAX, b'H'), |(count, _, unit)| (count, unit));
    let mut digits = [0u8; 8];
    let mut n = count;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    buf[len] = unit;
    len + 1
}

/// Whether `b` travels unescaped in `grpc-message`: printable ASCII except
/// `%`.
fn unreserved(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'%'
}

/// Percent-encodes a status message for the `grpc-message` trailer.
///
/// ```
/// use keel_wire::grpc::{decode_message, encode_message};
/// assert_eq!(encode_message("50% off\n"), "50%25 off%0A");
/// assert_eq!(decode_message("50%25 off%0A"), "50% off\n");
/// assert_eq!(decode_message(&encode_message("naïve ☃")), "naïve ☃");
/// ```
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// Decodes a `grpc-message` value; bad escapes are kept as they are and
/// invalid UTF-8 is replaced, as gRPC asks of receivers (never an error).
pub fn decode_message(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `bytes` in standard base64 without padding, as gRPC writes
/// `-bin` header values.
///
/// ```
/// use keel_wire::grpc::{base64_decode, base64_encode};
/// assert_eq!(base64_encode(b"hello"), "aGVsbG8");
/// assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
/// assert_eq!(base64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
/// assert_eq!(base64_decode("a$"), None);
/// ```
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// Decodes standard base64, padded or not (gRPC peers send both); `None`
/// for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let value = |c: u8| BASE64.iter().position(|&b| b == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_reads_and_back_to_back() {
        let mut wire = Vec::new();
        for body in [&b"one"[..], b"", b"three"] {
            wire.extend_from_slice(&prefix(false, body.len()));
            wire.extend_from_slice(body);
        }
        // Byte by byte: every message comes out whole, in order.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = split_message(&mut buf, 16).unwrap() {
                got.push(m.data);
            }
        }
        assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn oversized_and_bad_flags_are_refused_from_the_prefix_alone() {
        let mut buf = BytesMut::from(&prefix(true, 1 << 20)[..]);
        assert_eq!(
            split_message(&mut buf, 1024),
            Err(MessageError::TooLarge {
                len: 1 << 20,
                max: 1024
            })
        );
        // Nothing was reserved for the refused message.
        assert!(buf.capacity() < 1024);
        let mut buf = BytesMut::from(&[7u8, 0, 0, 0, 0][..]);
        assert_eq!(split_message(&mut buf, 1024), Err(MessageError::BadFlag(7)));
    }

    #[test]
    fn timeouts_round_trip_never_shorter() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_nanos(1_500),
            Duration::from_millis(1),
            Duration::from_secs(1),
            Duration::from_secs(100_000),
            Duration::from_secs(10_000_000),
        ] {
            let text = format_timeout(timeout);
            assert!(text.len() <= 9, "{text}");
            let back = parse_timeout(&text).unwrap();
            assert!(back >= timeout, "{timeout:?} -> {text} -> {back:?}");
        }
        for bad in ["", "m", "1", "-1S", "1.5S", "123456789m", "1s", "5é"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255).collect();
        for len in 0..40 {
            let text = base64_encode(&data[..len]);
            assert!(!text.contains('='));
            assert_eq!(base64_decode(&text).as_deref(), Some(&data[..len]));
        }
        assert_eq!(base64_encode(b"\xff\xfe"), "//4");
        assert_eq!(base64_decode("A"), None);
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(decode_message("100%"), "100%");
        assert_eq!(decode_message("%zz%4"), "%zz%4");
        assert_eq!(decode_message("%FF"), "\u{fffd}");
    }
}
