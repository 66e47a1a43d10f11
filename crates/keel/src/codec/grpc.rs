//! gRPC's headers and trailers as Keel's types, for the gRPC server and the
//! gRPC client alike: metadata, status, message encoding, trace ids.
//!
//! Owns: which headers are gRPC's own (never metadata), how a [`Status`]
//! reads as `grpc-status`/`grpc-message`/`keel-code` and back (the codes
//! through [`crate::status::mapping`]), the `grpc-encoding` names, and
//! W3C `traceparent`, and a unary call's one message. May not touch: connections or calls.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::codec::Encode;
use crate::compression::{Compression, Scratch};
use crate::metadata::Metadata;
use crate::rpcz::TraceContext;
use crate::status::{Code, Status};

/// `content-type` of gRPC requests and responses.
pub(crate) const CONTENT_TYPE: HeaderValue = HeaderValue::from_static(CONTENT_TYPE_TEXT);
pub(crate) const CONTENT_TYPE_TEXT: &str = "application/grpc";
/// The encodings Keel reads and writes, for `grpc-accept-encoding`.
pub(crate) const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static(ACCEPT_ENCODING_TEXT);
pub(crate) const ACCEPT_ENCODING_TEXT: &str = "gzip,deflate,identity";
// Names as constants: inserting a name given as `&str` copies it into a
// new allocation each time.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
pub(crate) const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// The exact Keel code of a status whose gRPC code loses it (see
/// [`Code::needs_keel_code`]).
pub(crate) const KEEL_CODE: HeaderName = HeaderName::from_static("keel-code");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// A status's structured details, base64 (an encoded `google.rpc.Status`).
pub(crate) const GRPC_STATUS_DETAILS: HeaderName =
    HeaderName::from_static("grpc-status-details-bin");

/// Headers that are gRPC's or HTTP's own, never a call's metadata.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type"
                | "te"
                | "user-agent"
                | "content-length"
                | "accept-encoding"
                | "host"
                | "connection"
                | "keel-code"
                | "traceparent"
                | "tracestate"
        )
}

/// The metadata among `headers`: every header that is not reserved and
/// whose value is text (`-bin` values stay base64, as sent). Allocates
/// nothing when there is none.
pub(crate) fn metadata_from(headers: &HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let name = name.as_str();
        if is_reserved(name) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            metadata.insert(name, value);
        }
    }
    metadata
}

/// Adds `metadata` to `headers` (checked as [`checked_metadata`] says).
pub(crate) fn metadata_into(
    metadata: &Metadata,
    headers: &mut HeaderMap,
    code: Code,
) -> Result<(), Status> {
    for (key, value) in checked_metadata(metadata, code)? {
        let name = HeaderName::from_bytes(key.as_bytes());
        let value = HeaderValue::from_str(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Ok(())
}

/// `metadata` as HTTP/2 header fields: keys lowercased (HTTP/2 header
/// names are). A key or value HTTP/2 cannot carry, or a reserved key,
/// fails with `code` (the caller's fault on a client, the handler's on a
/// server). Allocates nothing when there is no metadata.
pub(crate) fn checked_metadata(
    metadata: &Metadata,
    code: Code,
) -> Result<Vec<(std::borrow::Cow<'_, str>, &str)>, Status> {
    let mut fields = Vec::new();
    for (key, value) in metadata.iter() {
        let name = if key.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(key.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(key)
        };
        let token =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) || is_reserved(&name) {
            return Err(Status::new(
                code,
                format!("metadata key {key:?} cannot be sent as a gRPC header"),
            ));
        }
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(Status::new(
                code,
                format!("metadata value of {key:?} is not visible ASCII text"),
            ));
        }
        fields.push((name, value));
    }
    Ok(fields)
}

/// Writes `status` (a failure) as `grpc-status`, `grpc-message` and, when
/// the gRPC code loses it, `keel-code`.
pub(crate) fn status_into(status: &Status, headers: &mut HeaderMap) {
    let code = status.code();
    headers.insert(GRPC_STATUS, HeaderValue::from(code.grpc()));
    if !status.message().is_empty() {
        let text = keel_wire::grpc::encode_message(status.message());
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(GRPC_MESSAGE, value);
        }
    }
    if code.needs_keel_code() {
        headers.insert(KEEL_CODE, HeaderValue::from(code.value()));
    }
    if !status.details().is_empty() {
        let text = keel_wire::grpc::base64_encode(status.details());
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(GRPC_STATUS_DETAILS, value);
        }
    }
}

/// A response's headers or trailers as a client reads them off the wire:
/// what gRPC needs of them, and the rest as metadata.
#[derive(Debug, Default)]
pub(crate) struct ResponseHead {
    /// `:status` (0 when absent).
    pub(crate) http_status: u16,
    /// `grpc-status`: the number, or the text that is not one.
    grpc_status: Option<Result<u32, Vec<u8>>>,
    keel_code: Option<i32>,
    message: Option<Vec<u8>>,
    details: Option<Vec<u8>>,
    encoding: Option<Result<Option<Compression>, String>>,
    pub(crate) metadata: Metadata,
}

impl keel_pool::Reset for ResponseHead {
    /// Back to empty: what a head holds on the heap (a message, metadata)
    /// is rare enough not to be kept.
    fn reset(&mut self) {
        *self = ResponseHead::default();
    }
}

impl ResponseHead {
    /// The fields of `headers`.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn from_map(headers: &HeaderMap) -> ResponseHead {
        let mut head = ResponseHead::default();
        for (name, value) in headers {
            head.field(name.as_str().as_bytes(), value.as_bytes());
        }
        head
    }

    /// One field, as decoded.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":status" => {
                self.http_status = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            b"grpc-status" => {
                let number = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                self.grpc_status = Some(number.ok_or_else(|| value.to_vec()));
            }
            b"grpc-message" => self.message = Some(value.to_vec()),
            b"grpc-status-details-bin" => self.details = Some(value.to_vec()),
            b"grpc-encoding" => self.encoding = Some(encoding_named(Some(value))),
            b"keel-code" => {
                self.keel_code = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            _ if name.first() == Some(&b':') => {}
            _ => {
                if let (Ok(name), Ok(value)) =
                    (std::str::from_utf8(name), std::str::from_utf8(value))
                    && !is_reserved(name)
                    && value
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
                {
                    self.metadata.insert(name, value);
                }
            }
        }
    }

    /// The outcome these fields carry, or `None` when they carry no
    /// `grpc-status`.
    pub(crate) fn status(&self) -> Option<Result<(), Status>> {
        let grpc = match self.grpc_status.as_ref()? {
            Ok(grpc) => *grpc,
            Err(raw) => {
                return Some(Err(Status::new(
                    Code::Unknown,
                    format!(
                        "the server sent grpc-status {:?}, not a number",
                        String::from_utf8_lossy(raw)
                    ),
                )));
            }
        };
        if grpc == 0 {
            return Some(Ok(()));
        }
        let message = self
            .message
            .as_deref()
            .map(|v| keel_wire::grpc::decode_message(&String::from_utf8_lossy(v)))
            .unwrap_or_default();
        let status = Status::new(Code::from_grpc(grpc, self.keel_code), message);
        let details = self
            .details
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(keel_wire::grpc::base64_decode);
        Some(Err(match details {
            Some(details) => status.with_details(details),
            None => status,
        }))
    }

    /// The compression of the messages that follow (see [`encoding_named`]).
    pub(crate) fn encoding(&self) -> Result<Option<Compression>, String> {
        self.encoding.clone().unwrap_or(Ok(None))
    }
}

/// The compression a `grpc-encoding` value (`None`: absent) names.
pub(crate) fn encoding_named(value: Option<&[u8]>) -> Result<Option<Compression>, String> {
    match value {
        None | Some(b"identity") => Ok(None),
        Some(b"gzip") => Ok(Some(Compression::Gzip)),
        Some(b"deflate") => Ok(Some(Compression::Zlib)),
        Some(other) => Err(String::from_utf8_lossy(other).into_owned()),
    }
}

/// The `grpc-encoding` name of `compression`, if gRPC has one for it.
pub(crate) fn encoding_name(compression: Compression) -> Option<HeaderValue> {
    match compression {
        Compression::Gzip => Some(HeaderValue::from_static("gzip")),
        Compression::Zlib => Some(HeaderValue::from_static("deflate")),
        _ => None,
    }
}

/// The caller's trace ids from W3C `traceparent`
/// (`00-{trace id: 32 hex}-{parent span id: 16 hex}-{flags}`): Keel's
/// 64-bit trace id is the low half of the W3C one.
pub(crate) fn trace_from(headers: &HeaderMap) -> Option<TraceContext> {
    parse_traceparent(headers.get(TRACEPARENT)?.to_str().ok()?)
}

/// The caller's trace ids from a `traceparent` value (see [`trace_from`]).
pub(crate) fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.split('-');
    let (version, trace, parent) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || trace.len() != 32 || parent.len() != 16 {
        return None;
    }
    let trace_id = u64::from_str_radix(&trace[16..], 16).ok()?;
    let span_id = u64::from_str_radix(parent, 16).ok()?;
    (trace_id != 0).then_some(TraceContext {
        trace_id,
        span_id,
        parent_span_id: 0,
    })
}

/// `trace` as a W3C `traceparent` value (sampled).
pub(crate) fn traceparent(trace: TraceContext) -> HeaderValue {
    let text = format!("00-{:032x}-{:016x}-01", trace.trace_id, trace.span_id);
    HeaderValue::from_str(&text).expect("hex digits and dashes are a valid header value")
}

/// The one message of a unary call's side, `whole` being every byte of
/// its data: `(compressed, message)`, or why it is not exactly one message
/// (`blame`'s code; one over `max` is `RESOURCE_EXHAUSTED`).
pub(crate) fn unary_message(
    mut whole: Bytes,
    max: usize,
    blame: Code,
) -> Result<(bool, Bytes), Status> {
    const P: usize = keel_wire::grpc::PREFIX_LEN;
    let Some(len) = announced(&whole, max, blame)? else {
        return Err(one_message(blame, "no message"));
    };
    if whole.len() > P + len {
        return Err(one_message(blame, "more than one message"));
    }
    if whole.len() != P + len {
        return Err(one_message(blame, "a truncated message"));
    }
    let compressed = whole[0] == 1;
    // `advance`, not `split_off`: a buffer that is still a plain vector
    // stays one (splitting it would allocate its shared header).
    whole.advance(P);
    Ok((compressed, whole))
}

/// Writes the (uncompressed) prefix of the message `body` holds after the
/// room [`answer_buffer`] or [`message_buffer`] left for it.
pub(crate) fn seal_in_place(body: &mut BytesMut) {
    const P: usize = keel_wire::grpc::PREFIX_LEN;
    let prefix = keel_wire::grpc::prefix(false, body.len() - P);
    body[..P].copy_from_slice(&prefix);
}

/// Gives an answer's buffer (from [`answer_buffer`]) back to the thread
/// once its bytes were copied out, for the next answer.
pub(crate) fn give_back_answer_buffer(body: BytesMut) {
    let mut scratch = Scratch::take();
    if scratch.plain.capacity() == 0 {
        scratch.plain = body;
    }
    scratch.give_back();
}

/// An empty message buffer with room for the prefix: append the encoded
/// message, then [`seal`] it.
pub(crate) fn message_buffer(capacity: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(keel_wire::grpc::PREFIX_LEN + capacity);
    out.extend_from_slice(&[0; keel_wire::grpc::PREFIX_LEN]);
    out
}

/// A [`message_buffer`] for a server's answer, whose size is not known
/// yet: this thread's spare buffer when it has one (see [`seal`]).
pub(crate) fn answer_buffer() -> BytesMut {
    let mut scratch = Scratch::take();
    let mut out = std::mem::take(&mut scratch.plain);
    scratch.give_back();
    out.reserve(keel_wire::grpc::PREFIX_LEN + 64);
    out.extend_from_slice(&[0; keel_wire::grpc::PREFIX_LEN]);
    out
}

/// Messages up to this size leave a buffer with room to spare as a copy
/// of their exact size, and the buffer stays with the thread.
const COPIED_OUT: usize = 4 * 1024;

/// Fills in the prefix of a [`message_buffer`] holding one message,
/// compressing the message first when asked (see [`seal_compressed`]).
///
/// A small message in a buffer with room to spare (an answer's) is copied
/// out at its exact size, which takes one allocation where sending the
/// buffer itself takes two (a buffer with spare room becomes shared
/// `Bytes` through a second allocation), and the buffer is this thread's
/// spare for the next answer.
pub(crate) fn seal(mut body: BytesMut, compress: Option<Compression>) -> Result<Bytes, Status> {
    const P: usize = keel_wire::grpc::PREFIX_LEN;
    let mut scratch = Scratch::take();
    let sealed = match compress {
        None => {
            seal_in_place(&mut body);
            if body.len() == body.capacity() || body.len() > COPIED_OUT {
                // Its own, exact or large: sent as it is.
                scratch.give_back();
                return Ok(body.freeze());
            }
            Ok(Bytes::copy_from_slice(&body))
        }
        Some(kind) => seal_compressed(&body[P..], kind, &mut scratch.packed),
    };
    if scratch.plain.capacity() == 0 {
        scratch.plain = body;
    }
    scratch.give_back();
    sealed
}

/// `message` with its prefix, compressed when asked. Uncompressed, it is
/// encoded straight into the buffer that is sent; compressed, it is
/// encoded into this thread's reused buffer first (see [`seal_compressed`]).
pub(crate) fn seal_message(
    message: &(dyn Encode + Sync),
    compress: Option<Compression>,
) -> Result<Bytes, Status> {
    let Some(kind) = compress else {
        let mut body = message_buffer(message.encoded_len());
        message.encode_to(&mut body);
        return seal(body, None);
    };
    let mut scratch = Scratch::take();
    scratch.plain.reserve(message.encoded_len());
    message.encode_to(&mut scratch.plain);
    let Scratch { plain, packed } = &mut scratch;
    let sealed = seal_compressed(plain, kind, packed);
    scratch.give_back();
    sealed
}

/// The message `plain` compressed as `kind`, with its prefix. It is
/// compressed into `packed` (empty: a thread's reused buffer, see
/// [`Scratch`]) and copied out at its exact size: one allocation per
/// message, and the bytes queued for sending keep no room that a guess at
/// the compressed size left over.
fn seal_compressed(
    plain: &[u8],
    kind: Compression,
    packed: &mut BytesMut,
) -> Result<Bytes, Status> {
    const P: usize = keel_wire::grpc::PREFIX_LEN;
    crate::compression::compress(kind, plain, packed)?;
    let mut sealed = BytesMut::with_capacity(P + packed.len());
    sealed.extend_from_slice(&keel_wire::grpc::prefix(true, packed.len()));
    sealed.extend_from_slice(packed);
    Ok(sealed.freeze())
}

/// The length a message prefix at the start of `head` announces, once the
/// prefix is in, checked against `max`.
fn announced(head: &[u8], max: usize, blame: Code) -> Result<Option<usize>, Status> {
    keel_wire::grpc::parse_prefix(head, max)
        .map(|prefix| prefix.map(|(_, len)| len))
        .map_err(|e| message_error(e, blame))
}

/// The status of a message the receiver refuses: one over its limit is
/// `RESOURCE_EXHAUSTED` (as grpc-go says it), a malformed prefix `blame`'s.
pub(crate) fn message_error(e: keel_wire::grpc::MessageError, blame: Code) -> Status {
    match e {
        keel_wire::grpc::MessageError::TooLarge { len, max } => Status::resource_exhausted(
            format!("grpc: received message larger than max ({len} vs. {max})"),
        ),
        e => Status::new(blame, e.to_string()),
    }
}

fn one_message(blame: Code, what: &str) -> Status {
    Status::new(
        blame,
        format!("grpc: a unary call carries exactly one message each way; got {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_skips_reserved_headers_and_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", CONTENT_TYPE);
        headers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        headers.insert("user-agent", HeaderValue::from_static("grpc-go/1.7"));
        headers.insert("x-tenant", HeaderValue::from_static("acme"));
        headers.insert("trace-bin", HeaderValue::from_static("AAEC"));
        let metadata = metadata_from(&headers);
        assert_eq!(metadata.len(), 2);
        assert_eq!(metadata.get("x-tenant"), Some("acme"));
        assert_eq!(metadata.get("trace-bin"), Some("AAEC"));
        let mut out = HeaderMap::new();
        metadata_into(&metadata, &mut out, Code::EREQUEST).unwrap();
        assert_eq!(metadata_from(&out), metadata);
        let bad = Metadata::new().with("grpc-status", "0");
        let err = metadata_into(&bad, &mut out, Code::EREQUEST).unwrap_err();
        assert_eq!(err.code(), Code::EREQUEST);
        let bad = Metadata::new().with("x", "line\nbreak");
        assert!(metadata_into(&bad, &mut out, Code::EINTERNAL).is_err());
    }

    #[test]
    fn statuses_round_trip_exactly_between_keel_peers() {
        for status in [
            Status::not_found("no item 7"),
            Status::new(Code::ERPCTIMEDOUT, "late"),
            Status::new(Code::new(40_001), "out of stock: 50% gone\n"),
            Status::failed_precondition("see details").with_details(&b"\x08\x09\x12\x03why"[..]),
        ] {
            let mut headers = HeaderMap::new();
            status_into(&status, &mut headers);
            assert_eq!(
                ResponseHead::from_map(&headers).status(),
                Some(Err(status.clone()))
            );
        }
        let mut ok = HeaderMap::new();
        ok.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert_eq!(ResponseHead::from_map(&ok).status(), Some(Ok(())));
        assert_eq!(ResponseHead::from_map(&HeaderMap::new()).status(), None);
        let mut bad = HeaderMap::new();
        bad.insert(GRPC_STATUS, HeaderValue::from_static("x"));
        assert_eq!(
            ResponseHead::from_map(&bad)
                .status()
                .unwrap()
                .unwrap_err()
                .code(),
            Code::Unknown
        );
    }

    #[test]
    fn traceparent_round_trips_the_low_half() {
        let trace = TraceContext {
            trace_id: 0x0123_4567_89ab_cdef,
            span_id: 42,
            parent_span_id: 7,
        };
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, traceparent(trace));
        let back = trace_from(&headers).unwrap();
        assert_eq!((back.trace_id, back.span_id), (trace.trace_id, 42));
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-zz-1-01"));
        assert_eq!(trace_from(&headers), None);
    }

    #[test]
    fn encodings() {
        let mut headers = HeaderMap::new();
        assert_eq!(ResponseHead::from_map(&headers).encoding(), Ok(None));
        headers.insert(GRPC_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            ResponseHead::from_map(&headers).encoding(),
            Ok(Some(Compression::Gzip))
        );
        headers.insert(GRPC_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            ResponseHead::from_map(&headers).encoding(),
            Err("br".to_owned())
        );
    }
}
