//! The error type of this crate, [`WireError`], and [`BadMetaReason`], why
//! protobuf bytes were rejected (also the reason of
//! [`protowire::Malformed`](crate::protowire::Malformed)).

use crate::compress::CompressType;

/// Everything that can go wrong reading or writing a Keel wire format.
///
/// Decoding errors mean the peer sent bytes that are not a valid frame; the
/// message says what was wrong and, where there is one, what to change.
/// [`WireError::code`] gives a short stable name for metrics and logs.
///
/// After a decoding error the connection should be answered (if the frame's
/// correlation id is known) and closed: see [`crate::baidu_std::decode_frame`]
/// for what is left in the buffer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The first four bytes are not `PRPC`.
    #[error(
        "bad frame magic b\"{}\": a baidu_std frame starts with b\"PRPC\"{}",
        .seen.escape_ascii(),
        if *.http { "; these bytes look like HTTP, so sniff the connection (keel_wire::sniff) before choosing a protocol" } else { "" }
    )]
    BadMagic {
        /// The four bytes found where the magic should be.
        seen: [u8; 4],
        /// Whether `seen` starts an HTTP/1 request or the HTTP/2 preface, i.e.
        /// the peer speaks HTTP on a connection treated as baidu_std.
        http: bool,
    },

    /// The header announces a body larger than [`Limits::max_body_size`].
    ///
    /// Reported as soon as the 12 header bytes are present, before any of the
    /// body is buffered.
    ///
    /// [`Limits::max_body_size`]: crate::baidu_std::Limits::max_body_size
    #[error(
        "frame body of {size} bytes exceeds the limit of {limit} bytes; raise Limits::max_body_size if the peer legitimately sends messages this large"
    )]
    Oversized {
        /// The body size announced by the header.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The header's meta size is larger than its body size.
    #[error(
        "frame header is inconsistent: meta size {meta_size} is larger than body size {body_size}"
    )]
    MetaLargerThanBody {
        /// Meta size from the header.
        meta_size: u32,
        /// Body size from the header.
        body_size: u32,
    },

    /// A whole frame was expected but the buffer ends early.
    #[error(
        "frame truncated: it needs {needed} bytes but only {available} are present; pass the complete frame, or use decode_frame to wait for more bytes"
    )]
    Truncated {
        /// Bytes the frame needs (header, or header plus body).
        needed: usize,
        /// Bytes present.
        available: usize,
    },

    /// A whole frame was expected but more bytes follow it.
    #[error(
        "{extra} bytes follow the frame; Frame::decode takes exactly one frame, use decode_frame for a stream of frames"
    )]
    TrailingBytes {
        /// Number of bytes after the end of the frame.
        extra: usize,
    },

    /// The `RpcMeta` protobuf could not be decoded.
    #[error("RpcMeta is not a valid protobuf message: {0}")]
    BadMeta(#[from] prost::DecodeError),

    /// The `RpcMeta` protobuf could not be parsed by the zero-allocation
    /// parser ([`MetaView::parse`](crate::baidu_std::MetaView::parse)).
    ///
    /// The same kind of failure as [`WireError::BadMeta`] (same
    /// [`code`](WireError::code)), but typed, and built without allocating.
    #[error("RpcMeta is not a valid protobuf message: {field}: {reason}")]
    BadMetaField {
        /// Where parsing failed: a field (`RpcRequestMeta.service_name`), or a
        /// message (`RpcMeta`) when the failure is in a field key or in a
        /// field the parser does not know.
        field: &'static str,
        /// What was wrong there.
        reason: BadMetaReason,
    },

    /// `RpcMeta.attachment_size` is negative or larger than what follows the
    /// meta in the body.
    #[error(
        "RpcMeta.attachment_size is {attachment_size} but only {available} bytes follow the meta in the body (correlation_id {correlation_id})"
    )]
    AttachmentLargerThanPayload {
        /// The attachment size from the meta.
        attachment_size: i32,
        /// Bytes in the body after the meta (payload plus attachment).
        available: usize,
        /// The frame's correlation id, so that an error response can be sent.
        correlation_id: i64,
    },

    /// Encoding: `RpcMeta.attachment_size` does not match the attachment.
    #[error(
        "RpcMeta.attachment_size is {in_meta} but the attachment has {actual} bytes; set meta.attachment_size to the attachment's length before encoding"
    )]
    AttachmentSizeMismatch {
        /// The attachment size in the meta.
        in_meta: i32,
        /// The attachment's real length.
        actual: usize,
    },

    /// Encoding: the attachment is too large for `RpcMeta.attachment_size`,
    /// an int32.
    #[error(
        "attachment of {size} bytes is larger than RpcMeta.attachment_size can say (an int32, at most 2 GiB - 1); send smaller attachments"
    )]
    AttachmentTooLarge {
        /// The attachment's length.
        size: usize,
    },

    /// Encoding: the payload writer did not write the announced length.
    #[error(
        "the payload writer wrote {written} bytes but {declared} were declared; the frame was not written"
    )]
    PayloadLengthMismatch {
        /// The length passed to the encoder.
        declared: usize,
        /// What the writer actually appended.
        written: usize,
    },

    /// Encoding: the body does not fit the header's 32-bit size field (or a
    /// payload is too large for snappy's 32-bit length).
    #[error(
        "frame body of {size} bytes does not fit in a baidu_std frame (at most 4 GiB - 1); send smaller messages"
    )]
    FrameTooLarge {
        /// The body size that was asked for.
        size: u64,
    },

    /// A compression type Keel does not implement (or does not know).
    #[error(
        "compress_type {compress_type} is not supported; Keel supports 0 (none), 1 (snappy), 2 (gzip) and 3 (zlib)"
    )]
    UnsupportedCompression {
        /// The `compress_type` value.
        compress_type: i32,
    },

    /// Decompressing would produce more than the allowed number of bytes.
    #[error(
        "{kind} data decompresses to more than {limit} bytes (possibly a decompression bomb); raise the limit if the peer legitimately sends messages this large"
    )]
    DecompressedTooLarge {
        /// The compression used.
        kind: CompressType,
        /// The limit that was exceeded.
        limit: usize,
    },

    /// Compressed data is corrupt.
    #[error("{kind} data is corrupt: {source}")]
    Decompress {
        /// The compression used.
        kind: CompressType,
        /// What the decompressor reported.
        #[source]
        source: std::io::Error,
    },
}

impl WireError {
    /// A short, stable name for this kind of error, for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::BadMagic { .. } => "bad_magic",
            WireError::Oversized { .. } => "oversized",
            WireError::MetaLargerThanBody { .. } => "meta_larger_than_body",
            WireError::Truncated { .. } => "truncated",
            WireError::TrailingBytes { .. } => "trailing_bytes",
            WireError::BadMeta(_) | WireError::BadMetaField { .. } => "bad_meta",
            WireError::AttachmentLargerThanPayload { .. } => "attachment_larger_than_payload",
            WireError::AttachmentSizeMismatch { .. } => "attachment_size_mismatch",
            WireError::AttachmentTooLarge { .. } => "attachment_too_large",
            WireError::PayloadLengthMismatch { .. } => "payload_length_mismatch",
            WireError::FrameTooLarge { .. } => "frame_too_large",
            WireError::UnsupportedCompression { .. } => "unsupported_compression",
            WireError::DecompressedTooLarge { .. } => "decompressed_too_large",
            WireError::Decompress { .. } => "decompress",
        }
    }
}

/// Why protobuf bytes were rejected: a violation of the wire format, found
/// by the [`protowire`](crate::protowire) reader (which reports it with an
/// offset, as [`Malformed`](crate::protowire::Malformed)), or a field that
/// does not fit the `RpcMeta` schema, found by
/// [`MetaView::parse`](crate::baidu_std::MetaView::parse) (which reports it
/// at the field named by [`WireError::BadMetaField`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadMetaReason {
    /// A varint runs past the end of its message.
    #[error("a varint runs past the end of the message")]
    TruncatedVarint,
    /// A varint is longer than 10 bytes or does not fit 64 bits.
    #[error("a varint does not fit 64 bits")]
    VarintOverflow,
    /// A field key does not fit 32 bits.
    #[error("a field key does not fit 32 bits")]
    KeyOverflow,
    /// A field key has wire type 6 or 7, which protobuf does not define.
    #[error("a field key has an undefined wire type (6 or 7)")]
    InvalidWireType,
    /// A field key has field number 0.
    #[error("a field key has field number 0")]
    FieldNumberZero,
    /// A group (wire type 3 or 4): proto2 groups are not used by brpc's meta
    /// and are not accepted there.
    #[error("groups (wire types 3 and 4) are not supported")]
    Group,
    /// A length-delimited value runs past the end of its message.
    #[error("a value runs past the end of the message")]
    Truncated,
    /// A fixed-width value (wire type 1 or 5) runs past the end of its
    /// message.
    #[error("a fixed-width value runs past the end of the message")]
    TruncatedFixed,
    /// An end-group tag that closes no open group (none is open, or the open
    /// one has another field number).
    #[error("an end-group tag closes no open group")]
    UnexpectedEndGroup,
    /// A group whose message ends before its end-group tag.
    #[error("a group has no end-group tag")]
    UnterminatedGroup,
    /// Groups (or messages, for a walker that descends into them) nest
    /// deeper than
    /// [`protowire::RECURSION_LIMIT`](crate::protowire::RECURSION_LIMIT).
    #[error("nesting exceeds the recursion limit")]
    RecursionLimit,
    /// A known field was sent with another wire type than its protobuf type
    /// has (e.g. a varint where a string is expected).
    #[error("the field has the wrong wire type for its type")]
    WrongWireType,
    /// A string field is not valid UTF-8. Not reported by
    /// [`MetaView::parse`](crate::baidu_std::MetaView::parse), which reads
    /// proto2 strings as brpc does (any bytes, carried lossily); kept for
    /// readers that need strict UTF-8.
    #[error("the string is not valid UTF-8")]
    InvalidUtf8,
}
