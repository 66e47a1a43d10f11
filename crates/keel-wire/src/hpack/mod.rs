//! HPACK, HTTP/2's header compression (RFC 7541): a [`Decoder`] for the
//! header blocks a peer sends and an [`Encoder`] for the ones we send.
//!
//! One of each lives per HTTP/2 connection, because each side of a
//! connection keeps a dynamic table that the other side's encoder fills;
//! both are pure state machines over bytes, like the rest of this crate.
//!
//! # Decoding
//!
//! [`Decoder::decode`] takes one whole header block (the HEADERS payload and
//! its CONTINUATIONs joined) and calls a closure with each field's name and
//! value as borrowed slices, in order. Nothing is allocated per field:
//!
//! - indexed fields are slices of the static table or of the dynamic table,
//!   which keeps all its entries in one buffer (see below);
//! - plain string literals are slices of the block itself;
//! - Huffman-coded literals are decoded into one scratch buffer that the
//!   decoder keeps and reuses, block after block.
//!
//! The block is always decoded to the end, even after the header list has
//! grown past `max_list_size`, so that every dynamic table insertion it
//! makes is applied and the next block on the connection decodes correctly;
//! only then is [`HpackError::TooLarge`] returned. Every other error is a
//! connection error (COMPRESSION_ERROR): the table is then in an unknown
//! state and the connection must be closed.
//!
//! Dynamic table size updates are accepted only before the first field of a
//! block and only up to the size this side advertised
//! ([`Decoder::new`], [`Decoder::set_max_table_size`]). Integers are limited
//! to 32 bits (a header block is never near 4 GiB), indexes must be in
//! range, and Huffman strings must end in at most seven one-bits of padding
//! and never contain EOS.
//!
//! # Encoding
//!
//! [`Encoder::encode`] appends a block to a `BytesMut`. A field found with
//! its value in the static or the dynamic table is sent as its index (one
//! byte for indexes below 127); otherwise as a literal, its name as an index
//! when the name is in a table. [`Indexing`] says whether the literal may
//! enter the dynamic table: with [`Indexing::Yes`] the repeated fields of a
//! connection (`content-type: application/grpc`, `grpc-status: 0`, ...) cost
//! one byte from their second block on. Sensitive fields
//! ([`Indexing::Never`]) are always literals marked never-indexed, so that
//! intermediaries keep them out of their tables too (RFC 7541 7.1.3). A
//! string is Huffman-coded only when that makes it shorter; the coded length
//! is computed first, from a table, so the choice costs one pass.
//!
//! The encoder's table is at most 4096 bytes, the HTTP/2 default; a peer
//! advertising less is obeyed ([`Encoder::set_max_table_size`]), and the
//! change is announced at the start of the next block as RFC 7541 4.2 asks.
//!
//! # The dynamic table
//!
//! Both sides keep their table in one contiguous byte buffer plus a ring of
//! (offset, lengths) records, so inserting a field copies its bytes once and
//! allocates nothing once the buffer has grown to its working size (at most
//! twice the table's maximum); evicting only moves an offset, and the
//! buffer is compacted when it fills. See [`huffman`] for the Huffman code.

pub mod huffman;
mod table;

mod decoder;
mod encoder;

pub use decoder::Decoder;
pub use encoder::{Encoder, Indexing};

use bytes::{BufMut, BytesMut};

/// The number of entries in HPACK's static table (RFC 7541 Appendix A):
/// dynamic table entries start at index `STATIC_TABLE_LEN + 1`.
pub const STATIC_TABLE_LEN: usize = table::STATIC_LEN;

/// HTTP/2's initial SETTINGS_HEADER_TABLE_SIZE, and the most the encoder's
/// dynamic table uses.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Errors decoding a header block.
///
/// All are HTTP/2 connection errors of type COMPRESSION_ERROR except
/// [`HpackError::TooLarge`], which the caller answers on the stream alone
/// (see [`HpackError::is_connection_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    /// The block ends in the middle of a field representation.
    #[error(
        "header block truncated inside {0}; decode a block only once its HEADERS and CONTINUATION payloads are all joined"
    )]
    Truncated(&'static str),

    /// An integer does not fit in 32 bits or uses more than five
    /// continuation bytes.
    #[error(
        "integer in header block is too large: HPACK integers are limited here to 2^32-1 and at most 5 continuation bytes"
    )]
    IntegerOverflow,

    /// An indexed representation names index 0, which RFC 7541 reserves.
    #[error("header block refers to index 0, which is not a table entry: HPACK indexes start at 1")]
    IndexZero,

    /// An index past the end of the dynamic table.
    #[error(
        "header block refers to index {index}, but the tables have only {} entries (61 static, {dynamic_len} dynamic)",
        STATIC_TABLE_LEN + .dynamic_len
    )]
    IndexOutOfRange {
        /// The index in the block.
        index: usize,
        /// The number of entries in the dynamic table at that point.
        dynamic_len: usize,
    },

    /// A Huffman-coded string is invalid; the message says how.
    #[error("invalid Huffman-coded string in header block: {0}")]
    BadHuffman(&'static str),

    /// A dynamic table size update asks for more than this side advertised.
    #[error(
        "dynamic table size update to {size} bytes exceeds the {max} bytes our SETTINGS_HEADER_TABLE_SIZE allows"
    )]
    TableSizeUpdateTooLarge {
        /// The size the update asks for.
        size: usize,
        /// The SETTINGS_HEADER_TABLE_SIZE this side advertised.
        max: usize,
    },

    /// A dynamic table size update after a field of the same block.
    #[error(
        "dynamic table size update after a header field: RFC 7541 4.2 allows them only at the start of a header block"
    )]
    TableSizeUpdateNotFirst,

    /// Our SETTINGS_HEADER_TABLE_SIZE went below the table's size, but the
    /// next block did not start with the dynamic table size update that
    /// RFC 7541 4.2 then requires.
    #[error(
        "header block does not start with a dynamic table size update, but our SETTINGS_HEADER_TABLE_SIZE was lowered to {max} bytes, below the table's current {current} bytes, so RFC 7541 4.2 requires one"
    )]
    TableSizeUpdateMissing {
        /// The SETTINGS_HEADER_TABLE_SIZE now in force.
        max: usize,
        /// The table's maximum size, as last set by the peer's encoder.
        current: usize,
    },

    /// The decoded header list is larger than the limit passed to
    /// [`Decoder::decode`]. The whole block was still decoded, so the
    /// decoder is in sync and the connection can go on.
    #[error(
        "decoded header list of {size} bytes exceeds the limit of {limit} bytes (SETTINGS_MAX_HEADER_LIST_SIZE, counting each field as name + value + 32 bytes); the block was decoded to its end, so only this stream needs rejecting"
    )]
    TooLarge {
        /// The size of the whole decoded list.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl HpackError {
    /// Whether the error leaves the decoder out of sync with the peer's
    /// encoder, so the connection must end with COMPRESSION_ERROR. Only
    /// [`HpackError::TooLarge`] is not.
    pub fn is_connection_error(&self) -> bool {
        !matches!(self, HpackError::TooLarge { .. })
    }
}

/// Appends `value` as an HPACK integer (RFC 7541 5.1) with a
/// `prefix_bits`-bit prefix. The first byte's bits above the prefix are
/// taken from `flags` (its prefix bits are ignored). `prefix_bits` is
/// clamped to 1..=8.
pub fn encode_int(value: usize, prefix_bits: u8, flags: u8, dst: &mut BytesMut) {
    let prefix_bits = prefix_bits.clamp(1, 8);
    let mask = ((1u16 << prefix_bits) - 1) as u8;
    let flags = flags & !mask;
    if value < usize::from(mask) {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask);
    let mut rest = value - usize::from(mask);
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Reads an HPACK integer with a `prefix_bits`-bit prefix (clamped to
/// 1..=8) from the start of `src`, returning its value and how many bytes it
/// took. The bits above the prefix in the first byte are ignored.
///
/// # Errors
///
/// [`HpackError::Truncated`] if `src` ends first, and
/// [`HpackError::IntegerOverflow`] past 2^32-1 or five continuation bytes.
pub fn decode_int(src: &[u8], prefix_bits: u8) -> Result<(usize, usize), HpackError> {
    let (&first, _) = src
        .split_first()
        .ok_or(HpackError::Truncated("an integer"))?;
    let mut pos = 1;
    let value = read_int(src, &mut pos, first, prefix_bits.clamp(1, 8))?;
    Ok((value, pos))
}

/// Reads the rest of an integer whose first byte, `first`, came from just
/// before `src[*pos]`, advancing `pos` past it.
#[inline]
fn read_int(src: &[u8], pos: &mut usize, first: u8, prefix_bits: u8) -> Result<usize, HpackError> {
    let mask = ((1u16 << prefix_bits) - 1) as u8;
    let low = first & mask;
    if low < mask {
        return Ok(usize::from(low));
    }
    let mut value = u64::from(mask);
    let mut shift = 0u32;
    loop {
        let &b = src
            .get(*pos)
            .ok_or(HpackError::Truncated("an integer's continuation bytes"))?;
        *pos += 1;
        // At most five continuation bytes: shift <= 28, so value < 2^36.
        value += u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
    if value > u64::from(u32::MAX) {
        return Err(HpackError::IntegerOverflow);
    }
    usize::try_from(value).map_err(|_| HpackError::IntegerOverflow)
}
