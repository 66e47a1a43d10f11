//! [`RawFrame`]: a frame cut off a connection buffer, its meta not parsed.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use super::MetaView;
use crate::WireError;
use crate::baidu_std::{Frame, FrameHeader, HEADER_LEN, Limits, RpcMeta, check_magic};

/// A complete baidu_std frame cut from a connection buffer, its meta not yet
/// parsed.
///
/// Holds the frame's body (meta, payload and attachment; the header is
/// stripped) as one [`Bytes`] sharing the read buffer's storage. Parse the
/// meta in place with [`meta`](Self::meta), then cut payload and attachment
/// with [`split`](Self::split): neither allocates.
/// [`into_frame`](Self::into_frame) decodes it the owning way instead, into
/// a [`Frame`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawFrame {
    /// Meta, payload and attachment.
    body: Bytes,
    /// Length of the meta at the start of `body` (at most `body.len()`).
    meta_size: usize,
}

impl RawFrame {
    /// Cuts `bytes`, which must hold exactly one whole frame, like
    /// [`Frame::decode`] but without decoding the meta.
    ///
    /// Fails like [`Frame::decode`] does on the header and on the length of
    /// `bytes`: [`WireError::Truncated`] if it is short,
    /// [`WireError::TrailingBytes`] if it is long.
    pub fn decode(bytes: Bytes, limits: &Limits) -> Result<RawFrame, WireError> {
        let header = FrameHeader::parse(&bytes)?;
        header.check(limits)?;
        let needed = header.frame_len();
        if bytes.len() < needed {
            return Err(WireError::Truncated {
                needed,
                available: bytes.len(),
            });
        }
        if bytes.len() > needed {
            return Err(WireError::TrailingBytes {
                extra: bytes.len() - needed,
            });
        }
        let mut body = bytes;
        body.advance(HEADER_LEN);
        Ok(RawFrame::from_checked(header, body))
    }

    /// A frame of `body` whose header passed [`FrameHeader::check`].
    fn from_checked(header: FrameHeader, body: Bytes) -> RawFrame {
        debug_assert_eq!(body.len(), header.body_len());
        RawFrame {
            body,
            // u32 -> usize is lossless on every target Keel builds for.
            meta_size: header.meta_size as usize,
        }
    }

    /// Parses the meta in place: see [`MetaView::parse`].
    pub fn meta(&self) -> Result<MetaView<'_>, WireError> {
        MetaView::parse(self.meta_bytes())
    }

    /// The payload and the attachment, as slices of the body (no copy),
    /// using `meta.attachment_size`.
    ///
    /// Fails with [`WireError::AttachmentLargerThanPayload`] (carrying
    /// `meta.correlation_id`, so an error response can be sent) when
    /// `attachment_size` is negative or larger than what follows the meta.
    pub fn split(&self, meta: &MetaView<'_>) -> Result<(Bytes, Bytes), WireError> {
        self.cut(meta.attachment_size, meta.correlation_id)
    }

    /// The `RpcMeta` bytes: the body's first `meta_size` bytes.
    pub fn meta_bytes(&self) -> &[u8] {
        &self.body[..self.meta_size]
    }

    /// The body's length: meta, payload and attachment (the header's
    /// `body_size`).
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The body: meta, payload and attachment.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The header this frame was read with.
    pub fn header(&self) -> FrameHeader {
        FrameHeader {
            // Both were read from a header's u32 fields.
            body_size: self.body.len() as u32,
            meta_size: self.meta_size as u32,
        }
    }

    /// Decodes the meta with prost into an owned [`RpcMeta`] and splits the
    /// body: what [`decode_frame`](crate::baidu_std::decode_frame) returns.
    ///
    /// Fails with [`WireError::BadMeta`] or
    /// [`WireError::AttachmentLargerThanPayload`].
    pub fn into_frame(self) -> Result<Frame, WireError> {
        // Decoding from `Bytes` lets prost slice the bytes fields, not copy.
        let meta = RpcMeta::decode(self.body.slice(..self.meta_size))?;
        let (payload, attachment) = self.cut(meta.attachment_size, meta.correlation_id)?;
        Ok(Frame {
            meta,
            payload,
            attachment,
        })
    }

    /// Payload and attachment for an `attachment_size` from the meta.
    fn cut(&self, attachment_size: i32, correlation_id: i64) -> Result<(Bytes, Bytes), WireError> {
        let available = self.body.len() - self.meta_size;
        let attachment_len = usize::try_from(attachment_size)
            .ok()
            .filter(|&n| n <= available)
            .ok_or(WireError::AttachmentLargerThanPayload {
                attachment_size,
                available,
                correlation_id,
            })?;
        let payload_end = self.body.len() - attachment_len;
        Ok((
            self.body.slice(self.meta_size..payload_end),
            self.body.slice(payload_end..),
        ))
    }
}

/// Most a decoder reserves ahead of the bytes that have arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// Cuts the next frame off the front of a connection's read buffer, without
/// parsing its meta.
///
/// The contract of [`decode_frame`](crate::baidu_std::decode_frame), which
/// is this function followed by [`RawFrame::into_frame`]: `Ok(None)` while
/// the frame is incomplete; the header checked against `limits` as soon as
/// it is complete, before any of the body is waited for; `buf` reserved
/// toward the whole frame (64 KiB at a time) once the header passed; on a
/// header error `buf` is left
/// untouched (close the connection: the stream cannot be resynchronised).
///
/// Nothing is copied or allocated: the frame is split off `buf` and the
/// returned body shares its storage. Since the meta is not parsed here, a
/// bad meta is reported by [`RawFrame::meta`] after the frame has been
/// removed from `buf`, so the next call starts at the next frame.
pub fn decode_raw_frame(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<RawFrame>, WireError> {
    if buf.len() < HEADER_LEN {
        check_magic(buf)?;
        return Ok(None);
    }
    let header = FrameHeader::parse(buf)?;
    header.check(limits)?;
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        // Room for what is missing, but never more than a step at a time:
        // a header alone must not make a connection reserve a huge body.
        buf.reserve((frame_len - buf.len()).min(RESERVE_STEP));
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_len);
    frame.advance(HEADER_LEN);
    Ok(Some(RawFrame::from_checked(header, frame.freeze())))
}
