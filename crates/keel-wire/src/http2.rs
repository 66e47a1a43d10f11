//! HTTP/2 frames (RFC 9113, section 4 and 6) as pure functions: a frame's
//! 9-byte header read and written, the payloads gRPC needs taken apart
//! (padding and priority stripped, SETTINGS listed, WINDOW_UPDATE, PING,
//! RST_STREAM and GOAWAY read) and written into a caller's buffer.
//!
//! ```text
//!   +-----------------------------------------------+
//!   |                 Length (24)                   |
//!   +---------------+---------------+---------------+
//!   |   Type (8)    |   Flags (8)   |
//!   +-+-------------+---------------+-------------------------------+
//!   |R|                 Stream Identifier (31)                      |
//!   +=+=============================================================+
//!   |                   Frame Payload (0...)                      ...
//!   +---------------------------------------------------------------+
//! ```
//!
//! Header blocks are HPACK-coded ([`crate::hpack`]); connection and stream
//! state (windows, stream states, what is legal when) live with the
//! connection, in the `keel` crate. Nothing here allocates except into the
//! buffer it is given.

use bytes::{BufMut, BytesMut};

/// The client connection preface (RFC 9113, section 3.4).
pub const PREFACE: &[u8; 24] = crate::HTTP2_PREFACE;
/// Length of a frame header.
pub const HEAD_LEN: usize = 9;
/// HTTP/2's initial flow-control window (stream and connection).
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// HTTP/2's initial (and smallest allowed) SETTINGS_MAX_FRAME_SIZE.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE allowed.
pub const MAX_MAX_FRAME: u32 = (1 << 24) - 1;

/// Frame types.
#[allow(missing_docs)]
pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags.
#[allow(missing_docs)]
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers.
#[allow(missing_docs)]
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// HTTP/2 error codes (RFC 9113, section 7), as RST_STREAM and GOAWAY carry
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Reason {
    NoError,
    Protocol,
    Internal,
    FlowControl,
    SettingsTimeout,
    StreamClosed,
    FrameSize,
    RefusedStream,
    Cancel,
    Compression,
    Connect,
    EnhanceYourCalm,
    InadequateSecurity,
    Http11Required,
    /// A code this side does not know (peers may send any).
    Other(u32),
}

impl Reason {
    /// The code on the wire.
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Reason::NoError => 0,
            Reason::Protocol => 1,
            Reason::Internal => 2,
            Reason::FlowControl => 3,
            Reason::SettingsTimeout => 4,
            Reason::StreamClosed => 5,
            Reason::FrameSize => 6,
            Reason::RefusedStream => 7,
            Reason::Cancel => 8,
            Reason::Compression => 9,
            Reason::Connect => 10,
            Reason::EnhanceYourCalm => 11,
            Reason::InadequateSecurity => 12,
            Reason::Http11Required => 13,
            Reason::Other(code) => code,
        }
    }

    /// The reason a wire code names.
    #[must_use]
    pub fn from_code(code: u32) -> Reason {
        const KNOWN: [Reason; 14] = [
            Reason::NoError,
            Reason::Protocol,
            Reason::Internal,
            Reason::FlowControl,
            Reason::SettingsTimeout,
            Reason::StreamClosed,
            Reason::FrameSize,
            Reason::RefusedStream,
            Reason::Cancel,
            Reason::Compression,
            Reason::Connect,
            Reason::EnhanceYourCalm,
            Reason::InadequateSecurity,
            Reason::Http11Required,
        ];
        usize::try_from(code)
            .ok()
            .and_then(|i| KNOWN.get(i).copied())
            .unwrap_or(Reason::Other(code))
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Reason::NoError => "NO_ERROR",
            Reason::Protocol => "PROTOCOL_ERROR",
            Reason::Internal => "INTERNAL_ERROR",
            Reason::FlowControl => "FLOW_CONTROL_ERROR",
            Reason::SettingsTimeout => "SETTINGS_TIMEOUT",
            Reason::StreamClosed => "STREAM_CLOSED",
            Reason::FrameSize => "FRAME_SIZE_ERROR",
            Reason::RefusedStream => "REFUSED_STREAM",
            Reason::Cancel => "CANCEL",
            Reason::Compression => "COMPRESSION_ERROR",
            Reason::Connect => "CONNECT_ERROR",
            Reason::EnhanceYourCalm => "ENHANCE_YOUR_CALM",
            Reason::InadequateSecurity => "INADEQUATE_SECURITY",
            Reason::Http11Required => "HTTP_1_1_REQUIRED",
            Reason::Other(code) => return write!(f, "error code {code:#x}"),
        };
        f.write_str(name)
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length.
    pub len: usize,
    /// Frame type (see [`kind`]).
    pub kind: u8,
    /// Flags (see [`flag`]).
    pub flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl Head {
    /// Whether `f` is set.
    #[must_use]
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// The header at the start of `buf`, when all 9 bytes are there.
#[must_use]
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let b: &[u8; HEAD_LEN] = buf.get(..HEAD_LEN)?.try_into().ok()?;
    Some(Head {
        len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
        kind: b[3],
        flags: b[4],
        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
    })
}

/// Writes a frame header for a payload of `len` bytes (at most
/// [`MAX_MAX_FRAME`]; the caller keeps to the peer's maximum).
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME as usize);
    let len = u32::try_from(len).unwrap_or(MAX_MAX_FRAME).to_be_bytes();
    dst.put_slice(&len[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & MAX_WINDOW);
}

/// Why a frame's payload is malformed (a connection error, PROTOCOL_ERROR
/// or FRAME_SIZE_ERROR as [`FrameError::reason`] says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Padding longer than the payload.
    #[error("the frame's padding ({pad} bytes) is longer than its payload ({len} bytes)")]
    Padding {
        /// Announced padding.
        pad: usize,
        /// Payload length.
        len: usize,
    },
    /// A payload whose length its type fixes has another.
    #[error("a {what} frame must carry {expected} bytes, this one carries {len}")]
    Size {
        /// The frame type.
        what: &'static str,
        /// The required length (or multiple, for SETTINGS).
        expected: usize,
        /// The length it has.
        len: usize,
    },
    /// A frame on stream 0 that must be on a stream, or the reverse.
    #[error("a {what} frame {rule}")]
    Stream {
        /// The frame type.
        what: &'static str,
        /// What the rule is.
        rule: &'static str,
    },
    /// A SETTINGS value out of its range.
    #[error("SETTINGS {name} = {value} is out of range")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u32,
    },
}

impl FrameError {
    /// The error code a connection closes with.
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            FrameError::Size { .. } => Reason::FrameSize,
            FrameError::Setting {
                name: "SETTINGS_INITIAL_WINDOW_SIZE",
                ..
            } => Reason::FlowControl,
            _ => Reason::Protocol,
        }
    }
}

/// The data of a DATA frame, its padding stripped.
///
/// # Errors
/// Padding longer than the payload.
pub fn data_payload(head: &Head, payload: &[u8]) -> Result<std::ops::Range<usize>, FrameError> {
    unpad(head, payload, 0)
}

/// The header block fragment of a HEADERS frame, its padding and priority
/// stripped (a range of `payload`).
///
/// # Errors
/// Padding longer than the payload, or a priority field cut short.
pub fn headers_payload(head: &Head, payload: &[u8]) -> Result<std::ops::Range<usize>, FrameError> {
    let priority = if head.has(flag::PRIORITY) { 5 } else { 0 };
    unpad(head, payload, priority)
}

fn unpad(head: &Head, payload: &[u8], skip: usize) -> Result<std::ops::Range<usize>, FrameError> {
    let (start, pad) = if head.has(flag::PADDED) {
        let pad = usize::from(
            *payload
                .first()
                .ok_or(FrameError::Padding { pad: 1, len: 0 })?,
        );
        (1, pad)
    } else {
        (0, 0)
    };
    let start = start + skip;
    match payload.len().checked_sub(start + pad) {
        Some(_) => Ok(start..payload.len() - pad),
        None => Err(FrameError::Padding {
            pad: pad + start,
            len: payload.len(),
        }),
    }
}

/// The settings a SETTINGS frame carries, in order, checked against the
/// ranges RFC 9113 section 6.5.2 sets (unknown identifiers are skipped, as
/// the RFC says).
///
/// # Errors
/// A length that is not a multiple of 6, a SETTINGS frame on a stream, an
/// ACK with a payload, or a value out of range.
pub fn settings(head: &Head, payload: &[u8]) -> Result<Vec<(u16, u32)>, FrameError> {
    let mut out = Vec::new();
    for_each_setting(head, payload, |id, value| out.push((id, value)))?;
    Ok(out)
}

/// As [`settings`], calling `each` instead of collecting (no allocation).
///
/// # Errors
/// As [`settings`]; `each` sees the settings before the bad one.
pub fn for_each_setting(
    head: &Head,
    payload: &[u8],
    mut each: impl FnMut(u16, u32),
) -> Result<(), FrameError> {
    if head.stream != 0 {
        return Err(FrameError::Stream {
            what: "SETTINGS",
            rule: "must be on stream 0",
        });
    }
    if head.has(flag::ACK) && !payload.is_empty() {
        return Err(FrameError::Size {
            what: "SETTINGS ACK",
            expected: 0,
            len: payload.len(),
        });
    }
    if payload.len() % 6 != 0 {
        return Err(FrameError::Size {
            what: "SETTINGS",
            expected: 6,
            len: payload.len(),
        });
    }
    for entry in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        let bad = |name| Err(FrameError::Setting { name, value });
        match id {
            setting::ENABLE_PUSH if value > 1 => return bad("SETTINGS_ENABLE_PUSH"),
            setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                return bad("SETTINGS_INITIAL_WINDOW_SIZE");
            }
            setting::MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME..=MAX_MAX_FRAME).contains(&value) => {
                return bad("SETTINGS_MAX_FRAME_SIZE");
            }
            _ => each(id, value),
        }
    }
    Ok(())
}

/// What a SETTINGS frame changes of what a connection's side keeps of its
/// peer (the rest of the settings: skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSettings {
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub window: Option<u32>,
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub table: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame: Option<u32>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: Option<u32>,
}

/// The settings of a (non-ACK) SETTINGS frame a connection acts on, read
/// as [`for_each_setting`] checks them.
///
/// # Errors
/// As [`settings`].
pub fn peer_settings(head: &Head, payload: &[u8]) -> Result<PeerSettings, FrameError> {
    let mut peer = PeerSettings::default();
    for_each_setting(head, payload, |id, value| match id {
        setting::INITIAL_WINDOW_SIZE => peer.window = Some(value),
        setting::HEADER_TABLE_SIZE => peer.table = Some(value),
        setting::MAX_FRAME_SIZE => peer.max_frame = Some(value),
        setting::MAX_CONCURRENT_STREAMS => peer.max_streams = Some(value),
        _ => {}
    })?;
    Ok(peer)
}

/// The first frame of a buffer, as far as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A whole frame: its payload is `buf[HEAD_LEN..HEAD_LEN + head.len]`.
    Whole(Head),
    /// Not all of it was read yet.
    Partial,
    /// Its head announces more than the connection allows (FRAME_SIZE_ERROR).
    TooLarge(usize),
}

/// Cuts the first frame off `buf`, allowing payloads up to `max_frame`.
#[must_use]
pub fn cut(buf: &[u8], max_frame: usize) -> Cut {
    match parse_head(buf) {
        None => Cut::Partial,
        Some(h) if h.len > max_frame => Cut::TooLarge(h.len),
        Some(h) if buf.len() < HEAD_LEN + h.len => Cut::Partial,
        Some(h) => Cut::Whole(h),
    }
}

/// What [`HeaderBlocks::take`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assembly {
    /// Not part of a header block: the connection handles it.
    Other,
    /// A header block goes on in CONTINUATION frames.
    Pending,
    /// A whole header block, in [`HeaderBlocks::block`].
    Complete {
        /// The block's stream.
        stream: u32,
        /// Its HEADERS frame ended the stream.
        end_stream: bool,
    },
}

/// Header blocks as they arrive in a HEADERS frame and the CONTINUATION
/// frames after it (RFC 9113 section 6.10): no other frame may come in
/// between, and the block is bounded.
#[derive(Debug, Default)]
pub struct HeaderBlocks {
    /// The stream of a block still open, and its END_STREAM.
    partial: Option<(u32, bool)>,
    fragments: BytesMut,
}

impl HeaderBlocks {
    /// Takes every frame a connection reads, first: assembles HEADERS and
    /// CONTINUATION frames (at most `max` bytes a block), and checks that
    /// nothing interrupts a block.
    ///
    /// # Errors
    /// A connection error: its code and why.
    pub fn take(
        &mut self,
        head: &Head,
        payload: &[u8],
        max: usize,
    ) -> Result<Assembly, (Reason, String)> {
        if let Some((id, _)) = self.partial
            && (head.kind != kind::CONTINUATION || head.stream != id)
        {
            return Err((
                Reason::Protocol,
                "a header block was interrupted by another frame".to_owned(),
            ));
        }
        if !matches!(head.kind, kind::HEADERS | kind::CONTINUATION) {
            return Ok(Assembly::Other);
        }
        check_fixed(head).map_err(|e| (e.reason(), e.to_string()))?;
        let (stream, end_stream) = if head.kind == kind::HEADERS {
            let range = headers_payload(head, payload).map_err(|e| (e.reason(), e.to_string()))?;
            self.fragments.clear();
            self.fragments.extend_from_slice(&payload[range]);
            (head.stream, head.has(flag::END_STREAM))
        } else {
            let Some(open) = self.partial else {
                return Err((
                    Reason::Protocol,
                    "CONTINUATION without a header block before it".to_owned(),
                ));
            };
            if self.fragments.len() + payload.len() > max {
                return Err((
                    Reason::EnhanceYourCalm,
                    format!("a header block over {max} bytes"),
                ));
            }
            self.fragments.extend_from_slice(payload);
            open
        };
        if head.has(flag::END_HEADERS) {
            self.partial = None;
            Ok(Assembly::Complete { stream, end_stream })
        } else {
            self.partial = Some((stream, end_stream));
            Ok(Assembly::Pending)
        }
    }

    /// The block [`take`](Self::take) completed.
    #[must_use]
    pub fn block(&self) -> &[u8] {
        &self.fragments
    }

    /// The block was decoded: its buffer is cleared, and given back when a
    /// large block grew it past `keep` bytes.
    pub fn done(&mut self, keep: usize) {
        self.fragments.clear();
        if self.fragments.capacity() > keep {
            self.fragments = BytesMut::new();
        }
    }

    /// Gives the buffer back (a quiet connection).
    pub fn shrink(&mut self) {
        if self.partial.is_none() {
            self.fragments = BytesMut::new();
        }
    }

    /// Bytes held.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.fragments.capacity()
    }
}

/// Checks a frame whose payload length its type fixes, and whether it is
/// on a stream, before the connection acts on it.
///
/// # Errors
/// The rule of RFC 9113 section 6 the frame breaks.
pub fn check_fixed(head: &Head) -> Result<(), FrameError> {
    let (what, len, on_stream) = match head.kind {
        kind::PRIORITY => ("PRIORITY", 5, Some(true)),
        kind::RST_STREAM => ("RST_STREAM", 4, Some(true)),
        kind::PING => ("PING", 8, Some(false)),
        kind::WINDOW_UPDATE => ("WINDOW_UPDATE", 4, None),
        kind::DATA => ("DATA", head.len, Some(true)),
        kind::HEADERS => ("HEADERS", head.len, Some(true)),
        kind::CONTINUATION => ("CONTINUATION", head.len, Some(true)),
        kind::GOAWAY if head.len < 8 => {
            return Err(FrameError::Size {
                what: "GOAWAY",
                expected: 8,
                len: head.len,
            });
        }
        kind::GOAWAY => ("GOAWAY", head.len, Some(false)),
        _ => return Ok(()),
    };
    if head.len != len {
        return Err(FrameError::Size {
            what,
            expected: len,
            len: head.len,
        });
    }
    match on_stream {
        Some(true) if head.stream == 0 => Err(FrameError::Stream {
            what,
            rule: "must be on a stream, not stream 0",
        }),
        Some(false) if head.stream != 0 => Err(FrameError::Stream {
            what,
            rule: "must be on stream 0",
        }),
        _ => Ok(()),
    }
}

/// The increment of a WINDOW_UPDATE payload (checked by [`check_fixed`]);
/// 0 is the peer's error.
#[must_use]
pub fn window_increment(payload: &[u8]) -> u32 {
    read_u32(payload, 0) & MAX_WINDOW
}

/// The error code of a RST_STREAM payload (checked by [`check_fixed`]).
#[must_use]
pub fn rst_reason(payload: &[u8]) -> Reason {
    Reason::from_code(read_u32(payload, 0))
}

/// `(last stream id, error code, debug data)` of a GOAWAY payload (checked
/// by [`check_fixed`]).
#[must_use]
pub fn goaway(payload: &[u8]) -> (u32, Reason, &[u8]) {
    (
        read_u32(payload, 0) & MAX_WINDOW,
        Reason::from_code(read_u32(payload, 4)),
        payload.get(8..).unwrap_or_default(),
    )
}

fn read_u32(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

/// Writes a SETTINGS frame carrying `values`.
pub fn put_settings(dst: &mut BytesMut, values: &[(u16, u32)]) {
    put_head(dst, values.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in values {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Writes a SETTINGS acknowledgement.
pub fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Writes a PING (or its acknowledgement) carrying `data`.
pub fn put_ping(dst: &mut BytesMut, ack: bool, data: [u8; 8]) {
    put_head(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&data);
}

/// Writes a WINDOW_UPDATE of `increment` (1 to [`MAX_WINDOW`]) for `stream`
/// (0: the connection).
pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & MAX_WINDOW);
}

/// Writes a RST_STREAM.
pub fn put_rst(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.code());
}

/// Writes a GOAWAY.
pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(dst, 8 + debug.len(), kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream & MAX_WINDOW);
    dst.put_u32(reason.code());
    dst.put_slice(debug);
}

/// Writes `data` as DATA frames of at most `max_frame` bytes each on
/// `stream`, END_STREAM on the last when `end` (one empty frame when `data`
/// is empty and `end`).
pub fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], max_frame: usize, end: bool) {
    dst.reserve(data.len() + data.len().div_ceil(max_frame.max(1)) * HEAD_LEN);
    put_data_with(dst, stream, data.len(), max_frame, end, |dst, range| {
        dst.put_slice(&data[range]);
    });
}

/// [`put_data`] for `len` bytes that `payload` puts after each frame's
/// head, given the range of them the frame carries: copied into `dst`, or
/// kept aside to be written from where they are.
pub fn put_data_with(
    dst: &mut BytesMut,
    stream: u32,
    len: usize,
    max_frame: usize,
    end: bool,
    mut payload: impl FnMut(&mut BytesMut, std::ops::Range<usize>),
) {
    let max_frame = max_frame.max(1);
    if len == 0 {
        if end {
            put_head(dst, 0, kind::DATA, flag::END_STREAM, stream);
        }
        return;
    }
    let mut start = 0;
    while start < len {
        let stop = len.min(start + max_frame);
        let flags = if end && stop == len {
            flag::END_STREAM
        } else {
            0
        };
        put_head(dst, stop - start, kind::DATA, flags, stream);
        payload(dst, start..stop);
        start = stop;
    }
}

/// Writes an encoded header block as a HEADERS frame and as many
/// CONTINUATION frames as `max_frame` needs.
pub fn put_headers(dst: &mut BytesMut, stream: u32, block: &[u8], max_frame: usize, end: bool) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let mut first = true;
    let end_flag = if end { flag::END_STREAM } else { 0 };
    if block.is_empty() {
        put_head(dst, 0, kind::HEADERS, flag::END_HEADERS | end_flag, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let headers_flag = if last { flag::END_HEADERS } else { 0 };
        let (kind, flags) = if first {
            (kind::HEADERS, headers_flag | end_flag)
        } else {
            (kind::CONTINUATION, headers_flag)
        };
        first = false;
        put_head(dst, chunk.len(), kind, flags, stream);
        dst.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: u8, flags: u8, stream: u32, len: usize) -> Head {
        Head {
            len,
            kind,
            flags,
            stream,
        }
    }

    #[test]
    fn heads_round_trip_and_clear_the_reserved_bit() {
        let mut buf = BytesMut::new();
        put_head(&mut buf, 0x01_02_03, kind::HEADERS, flag::END_HEADERS, 7);
        assert_eq!(&buf[..], b"\x01\x02\x03\x01\x04\x00\x00\x00\x07");
        assert_eq!(
            parse_head(&buf),
            Some(head(kind::HEADERS, flag::END_HEADERS, 7, 0x01_02_03))
        );
        assert_eq!(parse_head(&buf[..8]), None);
        let reserved = b"\x00\x00\x00\x00\x00\x80\x00\x00\x05";
        assert_eq!(parse_head(reserved).unwrap().stream, 5);
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let h = head(kind::DATA, flag::PADDED, 1, 6);
        assert_eq!(data_payload(&h, b"\x02abc\0\0"), Ok(1..4));
        assert!(data_payload(&h, b"\x09abc\0\0").is_err());
        assert!(data_payload(&h, b"").is_err());
        let h = head(kind::HEADERS, flag::PADDED | flag::PRIORITY, 1, 0);
        assert_eq!(headers_payload(&h, b"\x01\0\0\0\x03\x10xy\0"), Ok(6..8));
        let h = head(kind::HEADERS, flag::PRIORITY, 1, 0);
        assert!(headers_payload(&h, b"\0\0\0").is_err());
    }

    #[test]
    fn settings_are_checked() {
        let mut buf = BytesMut::new();
        put_settings(
            &mut buf,
            &[(setting::INITIAL_WINDOW_SIZE, 1 << 20), (0x99, 5)],
        );
        let h = parse_head(&buf).unwrap();
        assert_eq!(
            settings(&h, &buf[HEAD_LEN..]),
            Ok(vec![(setting::INITIAL_WINDOW_SIZE, 1 << 20), (0x99, 5)])
        );
        let bad = |id: u16, value: u32| {
            let mut p = Vec::new();
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&value.to_be_bytes());
            settings(&head(kind::SETTINGS, 0, 0, 6), &p).unwrap_err()
        };
        assert_eq!(
            bad(setting::INITIAL_WINDOW_SIZE, 1 << 31).reason(),
            Reason::FlowControl
        );
        assert_eq!(bad(setting::MAX_FRAME_SIZE, 100).reason(), Reason::Protocol);
        assert_eq!(bad(setting::ENABLE_PUSH, 2).reason(), Reason::Protocol);
        assert!(settings(&head(kind::SETTINGS, 0, 0, 5), &[0; 5]).is_err());
        assert!(settings(&head(kind::SETTINGS, 0, 3, 0), &[]).is_err());
        assert!(settings(&head(kind::SETTINGS, flag::ACK, 0, 6), &[0; 6]).is_err());
    }

    #[test]
    fn fixed_sizes_and_streams() {
        assert!(check_fixed(&head(kind::PING, 0, 0, 8)).is_ok());
        assert_eq!(
            check_fixed(&head(kind::PING, 0, 0, 7))
                .unwrap_err()
                .reason(),
            Reason::FrameSize
        );
        assert!(check_fixed(&head(kind::PING, 0, 1, 8)).is_err());
        assert!(check_fixed(&head(kind::DATA, 0, 0, 8)).is_err());
        assert!(check_fixed(&head(kind::RST_STREAM, 0, 1, 4)).is_ok());
        assert!(check_fixed(&head(kind::GOAWAY, 0, 0, 7)).is_err());
        assert!(check_fixed(&head(kind::WINDOW_UPDATE, 0, 3, 4)).is_ok());
        assert!(check_fixed(&head(0x42, 0, 3, 1000)).is_ok());
    }

    #[test]
    fn control_frames_round_trip() {
        let mut buf = BytesMut::new();
        put_goaway(&mut buf, 9, Reason::EnhanceYourCalm, b"calm");
        let h = parse_head(&buf).unwrap();
        check_fixed(&h).unwrap();
        assert_eq!(
            goaway(&buf[HEAD_LEN..]),
            (9, Reason::EnhanceYourCalm, &b"calm"[..])
        );
        buf.clear();
        put_rst(&mut buf, 3, Reason::Cancel);
        assert_eq!(rst_reason(&buf[HEAD_LEN..]), Reason::Cancel);
        buf.clear();
        put_window_update(&mut buf, 0, 1000);
        assert_eq!(window_increment(&buf[HEAD_LEN..]), 1000);
        assert_eq!(Reason::from_code(0x77), Reason::Other(0x77));
        assert_eq!(Reason::Cancel.to_string(), "CANCEL");
    }

    #[test]
    fn data_and_headers_split_at_the_frame_size() {
        let mut buf = BytesMut::new();
        put_data(&mut buf, 1, &[7; 10], 4, true);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(h) = parse_head(&buf[at..]) {
            seen.push((h.len, h.has(flag::END_STREAM)));
            at += HEAD_LEN + h.len;
        }
        assert_eq!(seen, [(4, false), (4, false), (2, true)]);
        buf.clear();
        put_headers(&mut buf, 3, &[1; 5], 2, true);
        let first = parse_head(&buf).unwrap();
        assert_eq!((first.kind, first.flags), (kind::HEADERS, flag::END_STREAM));
        let last = parse_head(&buf[buf.len() - HEAD_LEN - 1..]).unwrap();
        assert_eq!(
            (last.kind, last.flags),
            (kind::CONTINUATION, flag::END_HEADERS)
        );
    }
}
