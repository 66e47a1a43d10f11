//! brpc's `baidu_std` protocol: frames, their header and their meta.
//!
//! ```text
//! 0        4           8           12
//! +--------+-----------+-----------+--------------+-------------+---------------+
//! | "PRPC" | body_size | meta_size | RpcMeta      | payload     | attachment    |
//! |        | u32, BE   | u32, BE   | (protobuf)   | (message)   | (raw bytes)   |
//! +--------+-----------+-----------+--------------+-------------+---------------+
//!                                  |<-meta_size-->|             |<--attachment->|
//!                                  |<--------------- body_size ---------------->|
//! ```
//!
//! The attachment is the last `RpcMeta.attachment_size` bytes of the body;
//! the payload is what lies between meta and attachment.
//!
//! [`decode_frame`] cuts frames off a connection's read buffer; it checks the
//! header against [`Limits`] as soon as the 12 header bytes are present, so a
//! peer cannot make a connection buffer more than the limit. A decoded
//! [`Frame`]'s payload and attachment are [`Bytes`] slices of the read buffer:
//! no copy. [`encode_frame`] and [`encode_message_frame`] append a frame to a
//! write buffer with one reservation and no intermediate buffer.
//!
//! Two ways to read and write frames:
//!
//! - With prost types that own their strings: [`Frame`], [`RpcMeta`],
//!   [`decode_frame`], [`encode_frame`]. They are the reference, and what
//!   tests and tools use.
//! - Without allocating, for the server's and client's hot paths (module
//!   [`view`]): [`decode_raw_frame`] cuts a [`RawFrame`], whose meta is read
//!   in place as a [`MetaView`] borrowing its strings from the frame;
//!   [`encode_request`] and [`encode_response`] write a frame from borrowed
//!   fields. Both ways produce and accept the same bytes.

mod meta;
pub mod view;

pub use meta::{ChunkInfo, RpcMeta, RpcRequestMeta, RpcResponseMeta, StreamSettings, errno};
pub use view::{
    MetaView, RawFrame, RequestHeader, RequestView, ResponseHeader, ResponseView, UserFields,
    UserFieldsIter, decode_raw_frame, encode_request, encode_response, encode_response_with,
    salvage_correlation_id,
};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::WireError;
use crate::sniff::{Sniff, sniff};

/// The four bytes every baidu_std frame starts with.
pub const MAGIC: [u8; 4] = *b"PRPC";

/// Length of the fixed frame header: magic, body size, meta size.
pub const HEADER_LEN: usize = 12;

/// Bounds a decoder enforces before it buffers anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body (meta + payload + attachment, header excluded),
    /// in bytes. Also a sensible bound for a decompressed payload.
    pub max_body_size: usize,
}

impl Limits {
    /// The default [`max_body_size`](Self::max_body_size): 64 MiB, brpc's
    /// default `max_body_size`.
    pub const DEFAULT_MAX_BODY_SIZE: usize = 64 << 20;

    /// Limits with the given maximum body size.
    pub const fn new(max_body_size: usize) -> Limits {
        Limits { max_body_size }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(Limits::DEFAULT_MAX_BODY_SIZE)
    }
}

/// The 12-byte frame header, magic checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes after the header: meta + payload + attachment.
    pub body_size: u32,
    /// Bytes of the `RpcMeta` at the start of the body.
    pub meta_size: u32,
}

impl FrameHeader {
    /// Parses the header at the start of `buf` (extra bytes are ignored).
    ///
    /// Fails with [`WireError::BadMagic`] as soon as 4 bytes are present and
    /// are not `PRPC`, and with [`WireError::Truncated`] if fewer than
    /// [`HEADER_LEN`] bytes are present. Sizes are not checked here: see
    /// [`check`](Self::check).
    pub fn parse(buf: &[u8]) -> Result<FrameHeader, WireError> {
        check_magic(buf)?;
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        };
        let [_, _, _, _, b0, b1, b2, b3, m0, m1, m2, m3] = *header;
        Ok(FrameHeader {
            body_size: u32::from_be_bytes([b0, b1, b2, b3]),
            meta_size: u32::from_be_bytes([m0, m1, m2, m3]),
        })
    }

    /// Checks the sizes: the body within `limits`
    /// ([`WireError::Oversized`]), the meta within the body
    /// ([`WireError::MetaLargerThanBody`]).
    pub fn check(&self, limits: &Limits) -> Result<(), WireError> {
        let size = self.body_len();
        if size > limits.max_body_size {
            return Err(WireError::Oversized {
                size,
                limit: limits.max_body_size,
            });
        }
        if self.meta_size > self.body_size {
            return Err(WireError::MetaLargerThanBody {
                meta_size: self.meta_size,
                body_size: self.body_size,
            });
        }
        Ok(())
    }

    /// The body size as a `usize`.
    pub fn body_len(&self) -> usize {
        // u32 -> usize is lossless on every target Keel builds for (>= 32 bit).
        self.body_size as usize
    }

    /// The whole frame's length: header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// The header's 12 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.body_size.to_be_bytes());
        out[8..].copy_from_slice(&self.meta_size.to_be_bytes());
        out
    }
}

/// Fails if at least 4 bytes are present and they are not [`MAGIC`].
fn check_magic(buf: &[u8]) -> Result<(), WireError> {
    match buf.first_chunk::<4>() {
        Some(seen) if *seen != MAGIC => Err(WireError::BadMagic {
            seen: *seen,
            http: matches!(sniff(seen), Sniff::Http1 | Sniff::Http2 | Sniff::NeedMore),
        }),
        _ => Ok(()),
    }
}

/// One decoded baidu_std frame: request or response.
///
/// `payload` is the serialized message, still compressed if
/// `meta.compress_type` says so (see [`crate::decompress`]); `attachment` is
/// the raw attachment. Both are slices of the buffer the frame was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The frame's meta.
    pub meta: RpcMeta,
    /// The message bytes.
    pub payload: Bytes,
    /// The attachment bytes (`meta.attachment_size` of them).
    pub attachment: Bytes,
}

impl Frame {
    /// Decodes `bytes`, which must hold exactly one whole frame.
    ///
    /// A short buffer is [`WireError::Truncated`], a longer one
    /// [`WireError::TrailingBytes`]. Payload and attachment share `bytes`'
    /// storage.
    pub fn decode(bytes: Bytes, limits: &Limits) -> Result<Frame, WireError> {
        RawFrame::decode(bytes, limits)?.into_frame()
    }

    /// Appends this frame to `dst` (see [`encode_frame`]).
    ///
    /// `meta.attachment_size` must equal `attachment.len()`, as it does for
    /// any decoded frame.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), WireError> {
        encode_frame(
            dst,
            &self.meta,
            self.payload.len(),
            |buf| buf.extend_from_slice(&self.payload),
            &self.attachment,
        )
    }
}

/// Cuts the next frame off the front of a connection's read buffer.
///
/// Returns `Ok(None)` while the frame is incomplete; call again once more
/// bytes arrived. The header is checked as soon as it is complete: a bad
/// magic fails after 4 bytes, a body over `limits.max_body_size` or a meta
/// larger than the body after 12, before any of the body is waited for. Once
/// a header passed, `buf` is reserved toward the whole frame, at most 64 KiB
/// ahead of what arrived, so a header alone cannot make a connection reserve
/// a huge body.
///
/// A complete frame is split off `buf` (`split_to(..).freeze()`) and its
/// payload and attachment are slices of it: the body is neither copied nor
/// allocated; only the meta's strings are (see [`decode_raw_frame`] for a
/// decoder that allocates nothing).
///
/// On a header error `buf` is left untouched, and the stream cannot be
/// resynchronised: close the connection. On a body error
/// ([`WireError::BadMeta`], [`WireError::AttachmentLargerThanPayload`]) the
/// bad frame has been removed from `buf`, so the next call starts at the next
/// frame.
pub fn decode_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, WireError> {
    decode_raw_frame(buf, limits)?
        .map(RawFrame::into_frame)
        .transpose()
}

/// Appends one frame to `dst`: header, `meta`, a payload of `payload_len`
/// bytes written by `write_payload`, then `attachment`.
///
/// `dst` is reserved once for the whole frame and everything is written in
/// place. `write_payload` must append exactly `payload_len` bytes (e.g.
/// `|b| b.extend_from_slice(bytes)` after `bytes.len()`), and
/// `meta.attachment_size` must equal `attachment.len()`.
///
/// # Errors
///
/// - [`WireError::AttachmentSizeMismatch`]: `meta.attachment_size` is not
///   `attachment.len()`; nothing is written.
/// - [`WireError::FrameTooLarge`]: the body would not fit the header's
///   32-bit size; nothing is written.
/// - [`WireError::PayloadLengthMismatch`]: `write_payload` wrote another
///   length; what was written is removed again, so `dst` is as it was.
pub fn encode_frame(
    dst: &mut BytesMut,
    meta: &RpcMeta,
    payload_len: usize,
    write_payload: impl FnOnce(&mut BytesMut),
    attachment: &[u8],
) -> Result<(), WireError> {
    if usize::try_from(meta.attachment_size) != Ok(attachment.len()) {
        return Err(WireError::AttachmentSizeMismatch {
            in_meta: meta.attachment_size,
            actual: attachment.len(),
        });
    }
    write_frame(
        dst,
        meta.encoded_len(),
        |dst| {
            meta.encode(dst)
                .expect("BytesMut grows on demand, so encoding into it cannot run out of space")
        },
        payload_len,
        write_payload,
        attachment,
    )
}

/// Appends one frame to `dst`: header, a meta of `meta_len` bytes written by
/// `write_meta`, a payload of `payload_len` bytes written by
/// `write_payload`, then `attachment`; `dst` is reserved once for all of it.
///
/// Fails with [`WireError::FrameTooLarge`] before writing anything, and with
/// [`WireError::PayloadLengthMismatch`] after removing what was written.
fn write_frame(
    dst: &mut BytesMut,
    meta_len: usize,
    write_meta: impl FnOnce(&mut BytesMut),
    payload_len: usize,
    write_payload: impl FnOnce(&mut BytesMut),
    attachment: &[u8],
) -> Result<(), WireError> {
    let body_len = meta_len
        .checked_add(payload_len)
        .and_then(|n| n.checked_add(attachment.len()));
    let header = body_len
        .and_then(|n| u32::try_from(n).ok())
        .map(|body_size| FrameHeader {
            body_size,
            // meta_len <= body_len, which fits.
            meta_size: meta_len as u32,
        })
        .ok_or(WireError::FrameTooLarge {
            size: (meta_len as u64)
                .saturating_add(payload_len as u64)
                .saturating_add(attachment.len() as u64),
        })?;

    dst.reserve(header.frame_len());
    let start = dst.len();
    dst.put_slice(&header.to_bytes());
    write_meta(dst);
    debug_assert_eq!(
        dst.len() - start,
        HEADER_LEN + meta_len,
        "write_meta wrote meta_len bytes"
    );
    let payload_start = dst.len();
    write_payload(dst);
    match dst.len().checked_sub(payload_start) {
        Some(written) if written == payload_len => {}
        written => {
            dst.truncate(start);
            return Err(WireError::PayloadLengthMismatch {
                declared: payload_len,
                written: written.unwrap_or(0),
            });
        }
    }
    dst.put_slice(attachment);
    Ok(())
}

/// Appends one frame whose payload is `message`, encoded in place (see
/// [`encode_frame`]).
pub fn encode_message_frame<M: Message>(
    dst: &mut BytesMut,
    meta: &RpcMeta,
    message: &M,
    attachment: &[u8],
) -> Result<(), WireError> {
    encode_frame(
        dst,
        meta,
        message.encoded_len(),
        |buf| {
            message
                .encode(buf)
                .expect("BytesMut grows on demand, so encoding into it cannot run out of space")
        },
        attachment,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let header = FrameHeader {
            body_size: 0x0102_0304,
            meta_size: 7,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes, b"PRPC\x01\x02\x03\x04\x00\x00\x00\x07");
        assert_eq!(FrameHeader::parse(&bytes).ok(), Some(header));
        assert_eq!(header.frame_len(), 12 + 0x0102_0304);
    }

    #[test]
    fn magic_is_checked_before_the_header_is_complete() {
        assert!(matches!(
            FrameHeader::parse(b"GET /"),
            Err(WireError::BadMagic { seen, http: true }) if &seen == b"GET "
        ));
        assert!(matches!(
            FrameHeader::parse(b"PRPC\0"),
            Err(WireError::Truncated {
                needed: 12,
                available: 5
            })
        ));
        assert!(matches!(
            FrameHeader::parse(b"PR"),
            Err(WireError::Truncated {
                needed: 12,
                available: 2
            })
        ));
    }

    #[test]
    fn encoder_writes_exact_sizes() {
        let meta = RpcMeta::request("example.EchoService", "Echo", 7).with_attachment_size(3);
        let mut dst = BytesMut::from(&b"prefix"[..]);
        encode_frame(&mut dst, &meta, 2, |b| b.put_slice(b"hi"), b"att").unwrap();
        let frame = &dst[6..];
        let header = FrameHeader::parse(frame).unwrap();
        assert_eq!(header.frame_len(), frame.len());
        assert_eq!(header.meta_size as usize, meta.encoded_len());
        assert!(frame.ends_with(b"hiatt"));
    }
}
