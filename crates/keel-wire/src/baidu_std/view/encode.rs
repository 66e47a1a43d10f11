//! Request and response frames written straight into a write buffer, the
//! meta from borrowed fields: no `RpcMeta`, no `String`.

use bytes::{BufMut, BytesMut};

use super::fields::{len_field_len, put_len_prefix, put_varint_field, varint_field_len};
use crate::WireError;
use crate::baidu_std::write_frame;

/// What the meta of a request frame says, borrowed: the fields of
/// [`encode_request`].
///
/// The fields are those of `RpcMeta` and its `RpcRequestMeta` that a client
/// sets per call; zero values (and `None`) are not written, except
/// `service_name` and `method_name`, which brpc requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    /// The service's full protobuf name, e.g. `example.EchoService`.
    pub service_name: &'a str,
    /// The method's name within the service, e.g. `Echo`.
    pub method_name: &'a str,
    /// Chosen by the client; the response echoes it.
    pub correlation_id: i64,
    /// A client-chosen id for logs.
    pub log_id: i64,
    /// rpcz trace id (0: none).
    pub trace_id: i64,
    /// rpcz span id of the client span (0: none).
    pub span_id: i64,
    /// rpcz span id of the client span's parent (0: none).
    pub parent_span_id: i64,
    /// The client's timeout for this call, if it has one.
    pub timeout_ms: Option<i32>,
    /// Like HTTP's `x-request-id` (`RpcRequestMeta.request_id`, field 7),
    /// written when not empty.
    pub request_id: &'a str,
    /// How the payload is compressed: a
    /// [`CompressType`](crate::CompressType) number.
    pub compress_type: i32,
    /// Length of the attachment: must be the length of the attachment passed
    /// to [`encode_request`].
    pub attachment_len: usize,
    /// A credential for the server's authenticator (`RpcMeta` field 7),
    /// written when not empty; brpc clients send it on a connection's first
    /// request.
    pub authentication_data: &'a [u8],
    /// Key/value pairs sent with the call (`RpcMeta.user_fields`, field 9,
    /// brpc's `request_user_fields`), in the order given.
    pub user_fields: &'a [(String, String)],
}

impl<'a> RequestHeader<'a> {
    /// A request to `service_name`/`method_name` with everything else zero:
    /// set the other fields with struct update syntax.
    pub const fn new(
        service_name: &'a str,
        method_name: &'a str,
        correlation_id: i64,
    ) -> RequestHeader<'a> {
        RequestHeader {
            service_name,
            method_name,
            correlation_id,
            log_id: 0,
            trace_id: 0,
            span_id: 0,
            parent_span_id: 0,
            timeout_ms: None,
            request_id: "",
            compress_type: 0,
            attachment_len: 0,
            authentication_data: &[],
            user_fields: &[],
        }
    }

    /// Length of the `RpcRequestMeta`.
    fn request_meta_len(&self) -> usize {
        len_field_len(self.service_name.len())
            + len_field_len(self.method_name.len())
            + optional_len(self.log_id as u64)
            + optional_len(self.trace_id as u64)
            + optional_len(self.span_id as u64)
            + optional_len(self.parent_span_id as u64)
            + if self.request_id.is_empty() {
                0
            } else {
                len_field_len(self.request_id.len())
            }
            + self
                .timeout_ms
                .map_or(0, |t| varint_field_len(i64::from(t) as u64))
    }

    /// Writes the `RpcRequestMeta` (without key and length).
    fn put_request_meta(&self, dst: &mut BytesMut) {
        put_string_field(dst, 1, self.service_name);
        put_string_field(dst, 2, self.method_name);
        put_optional(dst, 3, self.log_id as u64);
        put_optional(dst, 4, self.trace_id as u64);
        put_optional(dst, 5, self.span_id as u64);
        put_optional(dst, 6, self.parent_span_id as u64);
        if !self.request_id.is_empty() {
            put_string_field(dst, 7, self.request_id);
        }
        if let Some(t) = self.timeout_ms {
            put_varint_field(dst, 8, i64::from(t) as u64);
        }
    }
}

/// Bytes of a varint field written only when non-zero.
#[inline]
fn optional_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        varint_field_len(value)
    }
}

/// Appends a varint field when it is not zero.
#[inline]
fn put_optional(dst: &mut BytesMut, number: u8, value: u64) {
    if value != 0 {
        put_varint_field(dst, number, value);
    }
}

/// Appends a string field (even an empty one).
#[inline]
fn put_string_field(dst: &mut BytesMut, number: u8, value: &str) {
    put_len_prefix(dst, number, value.len());
    dst.put_slice(value.as_bytes());
}

/// `RpcMeta` fields 3 to 5, the same in requests and responses: their
/// length.
#[inline]
fn tail_len(compress_type: i32, correlation_id: i64, attachment_size: i32) -> usize {
    // int32 values are sign-extended to 64 bits, as protobuf does.
    optional_len(i64::from(compress_type) as u64)
        + optional_len(correlation_id as u64)
        + optional_len(i64::from(attachment_size) as u64)
}

/// Writes `RpcMeta` fields 3 to 5 (see [`tail_len`]).
#[inline]
fn put_tail(dst: &mut BytesMut, compress_type: i32, correlation_id: i64, attachment_size: i32) {
    put_optional(dst, 3, i64::from(compress_type) as u64);
    put_optional(dst, 4, correlation_id as u64);
    put_optional(dst, 5, i64::from(attachment_size) as u64);
}

/// `RpcMeta` fields 7 (authentication data, when not empty) and 9 (one map
/// entry per user field): their length.
fn extras_len(authentication_data: &[u8], user_fields: &[(String, String)]) -> usize {
    let auth = if authentication_data.is_empty() {
        0
    } else {
        len_field_len(authentication_data.len())
    };
    auth + user_fields
        .iter()
        .map(|(k, v)| len_field_len(entry_len(k, v)))
        .sum::<usize>()
}

/// Length of one `map<string,string>` entry: key = 1, value = 2.
fn entry_len(key: &str, value: &str) -> usize {
    len_field_len(key.len()) + len_field_len(value.len())
}

/// Writes `RpcMeta` fields 7 and 9 (see [`extras_len`]).
fn put_extras(dst: &mut BytesMut, authentication_data: &[u8], user_fields: &[(String, String)]) {
    if !authentication_data.is_empty() {
        put_len_prefix(dst, 7, authentication_data.len());
        dst.put_slice(authentication_data);
    }
    for (key, value) in user_fields {
        put_len_prefix(dst, 9, entry_len(key, value));
        put_string_field(dst, 1, key);
        put_string_field(dst, 2, value);
    }
}

/// An attachment length as `RpcMeta.attachment_size`, an int32.
fn attachment_size(len: usize) -> Result<i32, WireError> {
    i32::try_from(len).map_err(|_| WireError::AttachmentTooLarge { size: len })
}

/// Appends a request frame to `dst`: header, meta from `header`, a payload
/// of `payload_len` bytes written by `write_payload`, then `attachment`.
///
/// Writes the bytes [`encode_frame`](crate::baidu_std::encode_frame) writes
/// for the equivalent [`RpcMeta`](crate::baidu_std::RpcMeta) (fields in
/// number order, zeros omitted, `service_name` and `method_name` always,
/// `timeout_ms` when `Some`), without building one: `dst` is reserved once
/// for the whole frame and nothing else is allocated.
///
/// # Errors
///
/// Nothing is left in `dst` on error.
///
/// - [`WireError::AttachmentTooLarge`]: `header.attachment_len` does not
///   fit an int32.
/// - [`WireError::AttachmentSizeMismatch`]: `header.attachment_len` is not
///   `attachment.len()`.
/// - [`WireError::FrameTooLarge`]: the body would not fit the header's
///   32-bit size.
/// - [`WireError::PayloadLengthMismatch`]: `write_payload` did not append
///   exactly `payload_len` bytes.
pub fn encode_request(
    dst: &mut BytesMut,
    header: &RequestHeader<'_>,
    payload_len: usize,
    write_payload: impl FnOnce(&mut BytesMut),
    attachment: &[u8],
) -> Result<(), WireError> {
    let attachment_size = attachment_size(header.attachment_len)?;
    if header.attachment_len != attachment.len() {
        return Err(WireError::AttachmentSizeMismatch {
            in_meta: attachment_size,
            actual: attachment.len(),
        });
    }
    let request_len = header.request_meta_len();
    let meta_len = len_field_len(request_len)
        + tail_len(header.compress_type, header.correlation_id, attachment_size)
        + extras_len(header.authentication_data, header.user_fields);
    write_frame(
        dst,
        meta_len,
        |dst| {
            put_len_prefix(dst, 1, request_len);
            header.put_request_meta(dst);
            put_tail(
                dst,
                header.compress_type,
                header.correlation_id,
                attachment_size,
            );
            put_extras(dst, header.authentication_data, header.user_fields);
        },
        payload_len,
        write_payload,
        attachment,
    )
}

/// What the meta of a response frame says, borrowed: the fields of
/// [`encode_response_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseHeader<'a> {
    /// The request's correlation id.
    pub correlation_id: i64,
    /// 0 for success, else the error code.
    pub error_code: i32,
    /// The error's text (written when not empty).
    pub error_text: &'a str,
    /// How the payload is compressed: a [`CompressType`](crate::CompressType)
    /// number.
    pub compress_type: i32,
    /// Key/value pairs sent back (`RpcMeta.user_fields`, field 9, brpc's
    /// `response_user_fields`), in the order given.
    pub user_fields: &'a [(String, String)],
}

/// Appends a response frame to `dst`: header, meta, `payload` (the
/// serialized response, compressed as `compress_type` says), `attachment`.
///
/// The meta is what [`RpcMeta::response`](crate::baidu_std::RpcMeta::response)
/// makes, with `compress_type` and `attachment_size` set, and the bytes are
/// those [`encode_frame`](crate::baidu_std::encode_frame) writes for it:
/// `error_code` always (as brpc writes it), `error_text` when not empty,
/// other zeros omitted. `dst` is reserved once for the whole frame and
/// nothing else is allocated.
///
/// # Errors
///
/// Nothing is written on error.
///
/// - [`WireError::AttachmentTooLarge`]: the attachment's length does not
///   fit an int32.
/// - [`WireError::FrameTooLarge`]: the body would not fit the header's
///   32-bit size.
pub fn encode_response(
    dst: &mut BytesMut,
    correlation_id: i64,
    error_code: i32,
    error_text: &str,
    compress_type: i32,
    payload: &[u8],
    attachment: &[u8],
) -> Result<(), WireError> {
    let header = ResponseHeader {
        correlation_id,
        error_code,
        error_text,
        compress_type,
        user_fields: &[],
    };
    encode_response_with(dst, &header, payload, attachment)
}

/// [`encode_response`] with every field of a [`ResponseHeader`], user
/// fields included.
pub fn encode_response_with(
    dst: &mut BytesMut,
    header: &ResponseHeader<'_>,
    payload: &[u8],
    attachment: &[u8],
) -> Result<(), WireError> {
    let ResponseHeader {
        correlation_id,
        error_code,
        error_text,
        compress_type,
        user_fields,
    } = *header;
    let attachment_size = attachment_size(attachment.len())?;
    let text_len = if error_text.is_empty() {
        0
    } else {
        len_field_len(error_text.len())
    };
    let response_len = varint_field_len(i64::from(error_code) as u64) + text_len;
    let meta_len = len_field_len(response_len)
        + tail_len(compress_type, correlation_id, attachment_size)
        + extras_len(&[], user_fields);
    write_frame(
        dst,
        meta_len,
        |dst| {
            put_len_prefix(dst, 2, response_len);
            put_varint_field(dst, 1, i64::from(error_code) as u64);
            if !error_text.is_empty() {
                put_string_field(dst, 2, error_text);
            }
            put_tail(dst, compress_type, correlation_id, attachment_size);
            put_extras(dst, &[], user_fields);
        },
        payload.len(),
        |dst| dst.put_slice(payload),
        attachment,
    )
}

#[cfg(test)]
mod tests {
    use super::super::fields::varint_len;
    use super::*;

    #[test]
    fn too_large_attachments_are_refused() {
        assert_eq!(attachment_size(7).ok(), Some(7));
        assert_eq!(attachment_size(i32::MAX as usize).ok(), Some(i32::MAX));
        assert!(matches!(
            attachment_size(i32::MAX as usize + 1),
            Err(WireError::AttachmentTooLarge { size }) if size == 1 << 31
        ));
    }

    #[test]
    fn user_fields_and_credentials_match_prost() {
        use crate::baidu_std::RpcMeta;
        use prost::Message;
        let fields = vec![
            ("authorization".to_owned(), "Bearer t".to_owned()),
            ("tenant".to_owned(), String::new()),
        ];
        let header = RequestHeader {
            authentication_data: b"secret",
            user_fields: &fields,
            request_id: "req-42",
            ..RequestHeader::new("s.S", "M", 5)
        };
        let mut frame = BytesMut::new();
        encode_request(&mut frame, &header, 0, |_| {}, &[]).expect("encodes");
        let meta_len = u32::from_be_bytes(frame[8..12].try_into().expect("4 bytes")) as usize;
        let meta = RpcMeta::decode(&frame[12..12 + meta_len]).expect("prost reads it");
        assert_eq!(&meta.authentication_data[..], b"secret");
        assert_eq!(
            meta.request.as_ref().map(|r| r.request_id.as_str()),
            Some("req-42")
        );
        assert_eq!(
            meta.user_fields.get("authorization").map(String::as_str),
            Some("Bearer t")
        );
        assert_eq!(meta.user_fields.get("tenant").map(String::as_str), Some(""));

        let mut frame = BytesMut::new();
        let header = ResponseHeader {
            correlation_id: 5,
            user_fields: &fields,
            ..ResponseHeader::default()
        };
        encode_response_with(&mut frame, &header, b"", b"").expect("encodes");
        let meta_len = u32::from_be_bytes(frame[8..12].try_into().expect("4 bytes")) as usize;
        let meta = RpcMeta::decode(&frame[12..12 + meta_len]).expect("prost reads it");
        assert_eq!(meta.correlation_id, 5);
        assert_eq!(meta.user_fields.len(), 2);
    }

    #[test]
    fn varint_lengths_sign_extend() {
        assert_eq!(varint_len(i64::from(-1i32) as u64), 10);
        assert_eq!(optional_len(0), 0);
        assert_eq!(tail_len(0, 0, 0), 0);
        assert_eq!(tail_len(-1, 1, 3), 11 + 2 + 2);
    }
}
