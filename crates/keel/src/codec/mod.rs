//! Payload encoding and decoding shared by clients, servers and transports.
//!
//! Transports receive the request as `&dyn Encode` rather than as bytes, so
//! a socket transport can compute the frame size up front and encode the
//! message straight into its write buffer — no intermediate copy. Decoding
//! takes [`Bytes`], so `bytes` fields can borrow from the received frame.
//!
//! This module owns encoding ([`Encode`], [`RawPayload`],
//! [`encode_to_bytes`]), decoding ([`decode_request`], [`decode_response`])
//! and how a decode failure is worded and coded for the peer (brpc's
//! "Fail to parse ..." text, [`Code::EREQUEST`] / [`Code::ERESPONSE`]). It
//! does not read the protobuf wire format itself: prost decodes messages,
//! and the presence check of `required` fields lives in `required.rs`,
//! which walks the bytes with [`keel_wire::protowire`], Keel's one protobuf
//! wire reader (fuzzed against prost in `keel-wire`). Its types are
//! re-exported here, so generated code names them `keel::codec::*`.
//!
//! # Proto2 `required` fields
//!
//! brpc (C++ protobuf) refuses a message that lacks a `required` field: the
//! server answers [`Code::EREQUEST`] ("Fail to parse request"), the client
//! fails the call with [`Code::ERESPONSE`]. prost decodes a missing required
//! `string` as `""` and keeps no presence for it, so the check has to look at
//! the encoded bytes before prost does:
//!
//! ```text
//!  keel-build, per message type with required fields (directly or in a
//!  sub-message it can hold):
//!     static RequiredSchema { required: [numbers], nested: [number -> &RequiredSchema] }
//!     impl RequiredFields for TheMessage { const REQUIRED = &that static; }
//!
//!  call site (generated):  Some(&schema)  ──►  RequiredSchema::check(&bytes)  ──►  prost decode
//!                          None (proto3,        walks the wire format once: no allocation,
//!                          no required)         recursion only into sub-messages that need it
//! ```
//!
//! The schema travels as an `Option<&'static RequiredSchema>` that generated
//! code passes to [`decode_request`], [`decode_response`],
//! [`MessagePools::take`](crate::server::MessagePools::take) and
//! [`Client::unary`](crate::Client::unary). Generated code knows at build time
//! which request and response types need a check, so for proto3 messages and
//! proto2 ones without required fields it passes `None`, and decoding them
//! costs one branch on a constant — nothing is walked. No bound on the message
//! type is needed, so every prost message (extern ones such as
//! `prost_types::Empty` included) still decodes.

use std::fmt;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::method::MethodDescriptor;
use crate::status::{Code, Status};

pub(crate) mod grpc;
pub(crate) mod json;
mod required;

pub use required::{NestedField, RequiredError, RequiredField, RequiredFields, RequiredSchema};

/// A request payload a transport can size and write: every prost message,
/// and [`RawPayload`] for bytes that are already encoded.
pub trait Encode {
    /// Exact number of bytes [`encode_to`](Encode::encode_to) appends.
    fn encoded_len(&self) -> usize;

    /// Appends the encoding to `buf`. Callers reserve room for it first
    /// (they know [`encoded_len`](Encode::encoded_len) already, for a
    /// prefix or a frame header): a message's length is worked out over
    /// all its fields, so it is not worked out twice. Without room, `buf`
    /// grows as the encoding goes.
    fn encode_to(&self, buf: &mut BytesMut);
}

impl<M: Message> Encode for M {
    fn encoded_len(&self) -> usize {
        Message::encoded_len(self)
    }

    fn encode_to(&self, buf: &mut BytesMut) {
        self.encode_raw(buf);
    }
}

/// Bytes sent as the payload unchanged: for proxies, tools like `keel call`,
/// and tests that need a malformed payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawPayload(pub Bytes);

impl Encode for RawPayload {
    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn encode_to(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.0);
    }
}

/// Encodes `payload` into a new buffer of exactly its size.
pub fn encode_to_bytes(payload: &dyn Encode) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.encoded_len());
    payload.encode_to(&mut buf);
    buf.freeze()
}

/// Decodes a request for `method`; failure is [`Code::EREQUEST`], as brpc
/// answers an unparsable request ("Fail to parse request=...").
///
/// `required` is the request type's table when it has proto2 `required`
/// fields (generated code passes it; see the [module docs](self)): a request
/// missing one fails before prost decodes it. `None` skips the check.
pub fn decode_request<M: Message + Default>(
    method: &MethodDescriptor,
    payload: Bytes,
    required: Option<&RequiredSchema>,
) -> Result<M, Status> {
    decode(Side::Request, method, payload, required)
}

/// Decodes a response of `method`; failure (a missing required field
/// included, when `required` is given) is [`Code::ERESPONSE`].
pub fn decode_response<M: Message + Default>(
    method: &MethodDescriptor,
    payload: Bytes,
    required: Option<&RequiredSchema>,
) -> Result<M, Status> {
    decode(Side::Response, method, payload, required)
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// Decodes a request for `method` into `into`, which must be empty (a
/// cleared, pooled message): the same checks and errors as
/// [`decode_request`], without building a new message.
pub fn merge_request<M: Message>(
    method: &MethodDescriptor,
    payload: Bytes,
    required: Option<&RequiredSchema>,
    into: &mut M,
) -> Result<(), Status> {
    merge(Side::Request, method, payload, required, into)
}

fn decode<M: Message + Default>(
    side: Side,
    method: &MethodDescriptor,
    payload: Bytes,
    required: Option<&RequiredSchema>,
) -> Result<M, Status> {
    let mut message = M::default();
    merge(side, method, payload, required, &mut message)?;
    Ok(message)
}

fn merge<M: Message>(
    side: Side,
    method: &MethodDescriptor,
    payload: Bytes,
    required: Option<&RequiredSchema>,
    into: &mut M,
) -> Result<(), Status> {
    let len = payload.len();
    let fail = |reason: &dyn fmt::Display| parse_failure(side, method, len, reason);
    if let Some(schema) = required {
        schema.check(&payload).map_err(|err| fail(&err))?;
    }
    into.merge(payload).map_err(|err| fail(&err))
}

/// Why a message of `len` bytes did not decode, in brpc's wording, so
/// operators can grep one text for both.
#[cold]
fn parse_failure(
    side: Side,
    method: &MethodDescriptor,
    len: usize,
    reason: &dyn fmt::Display,
) -> Status {
    let (code, what, type_name) = match side {
        Side::Request => (Code::EREQUEST, "request", method.request_type),
        Side::Response => (Code::ERESPONSE, "response", method.response_type),
    };
    Status::new(
        code,
        format!("Fail to parse {what}={type_name}, {what}_size={len}, method={method}: {reason}"),
    )
}

/// Decodes the `len` bytes at the start of `buf` into `into` (empty),
/// where they lie: with the checks and errors of [`decode_request`] or
/// [`decode_response`] (`server` picks the side). The bytes are consumed
/// whatever the outcome. A failure comes boxed: the result that every
/// message passes back through the stream's calls is then one pointer,
/// not a whole [`Status`] moved on the stack at each step (those moves,
/// stalled on store forwarding, were half of the time `Streaming::message`
/// spent itself: 5.6% of both processes' CPU on a stream of 16-byte
/// messages, 3.0% boxed; `perf record` on `keel-bench grpc --streaming`).
///
/// prost reads a message of at most [`COPY_FIELD_MAX`] bytes from a plain
/// slice ([`Copied`]), a larger one through [`InPlace`]; both copy small
/// `bytes` fields out rather than cut them. Against prost reading through
/// `Take<&mut BytesMut>`, a response with a 16-byte payload decoded in
/// 29 ns rather than 46-50 (a local timing loop), the client of one
/// server-streaming call of such responses spent 82-86 ns of CPU per
/// message rather than 97-102, and the call ran at 1.82-2.01x tonic's
/// rate rather than 1.66-1.80x (`keel-bench grpc --streaming`, builds
/// alternating, three runs each).
#[inline]
pub(crate) fn merge_in_place<M: Message>(
    server: bool,
    method: &MethodDescriptor,
    buf: &mut BytesMut,
    len: usize,
    required: Option<&RequiredSchema>,
    into: &mut M,
) -> Result<(), Box<Status>> {
    let side = if server {
        Side::Request
    } else {
        Side::Response
    };
    if let Some(schema) = required
        && let Err(err) = schema.check(&buf[..len])
    {
        bytes::Buf::advance(buf, len);
        return Err(Box::new(parse_failure(side, method, len, &err)));
    }
    let merged = if len <= COPY_FIELD_MAX {
        // No field of it can be larger: a plain slice.
        let merged = into.merge(&mut Copied(&buf[..len]));
        bytes::Buf::advance(buf, len);
        merged
    } else {
        let mut body = InPlace {
            buf: &mut *buf,
            pos: 0,
            end: len,
        };
        let merged = into.merge(&mut body);
        // What is left of the message, read or not, goes.
        let left = body.end;
        bytes::Buf::advance(buf, left);
        merged
    };
    merged.map_err(|err| Box::new(parse_failure(side, method, len, &err)))
}

/// A message of at most [`COPY_FIELD_MAX`] bytes, read from a slice: its
/// `bytes` fields are copied out (see [`InPlace`]).
struct Copied<'a>(&'a [u8]);

impl bytes::Buf for Copied<'_> {
    #[inline]
    fn remaining(&self) -> usize {
        self.0.len()
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        self.0
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        self.0 = &self.0[n..];
    }

    #[inline]
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        Bytes::copy_from_slice(field)
    }
}

/// A message larger than [`COPY_FIELD_MAX`] at the start of a stream's
/// buffer, `buf[pos..end]`, as prost reads it: varints and fixed fields
/// from a slice, so a read costs a bounds check and an addition, where a
/// `Take<&mut BytesMut>` moved the buffer's own start (and its
/// bookkeeping) at every read. (A smaller message is read by [`Copied`],
/// from a plain slice.)
///
/// A `bytes` field (prost asks for it with
/// [`copy_to_bytes`](bytes::Buf::copy_to_bytes), then copies it again into
/// a `Vec<u8>` field) is copied out when it is at most
/// [`COPY_FIELD_MAX`] bytes, and cut out of the buffer, without a copy,
/// only when larger. Cutting costs two atomic reference counts on the
/// stream's block, which took longer than an allocation and a copy of a
/// small field: decoding a response with a 16-byte payload field took
/// 40-43 ns cut and 24-27 ns copied, one with a 1 KiB field 95-114 and
/// 77-84 ns; at 4 KiB, copying lost (354 against 190 ns; a local timing
/// loop over 200,000 messages in memory). A small field copied out also
/// never keeps the stream's whole block alive in a message kept for
/// later (R7).
struct InPlace<'a> {
    buf: &'a mut BytesMut,
    /// What prost has read of the message.
    pos: usize,
    /// The message's end in `buf`.
    end: usize,
}

/// The largest `bytes` field [`InPlace`] copies out rather than cuts.
const COPY_FIELD_MAX: usize = 1024;

impl bytes::Buf for InPlace<'_> {
    #[inline]
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        assert!(
            n <= self.remaining(),
            "advance past the message's end ({n} > {})",
            self.remaining()
        );
        self.pos += n;
    }

    #[inline]
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(
            len <= self.remaining(),
            "a field past the message's end ({len} > {})",
            self.remaining()
        );
        if len <= COPY_FIELD_MAX {
            let field = Bytes::copy_from_slice(&self.buf[self.pos..self.pos + len]);
            self.pos += len;
            return field;
        }
        // What was read goes first, then the field is cut out.
        bytes::Buf::advance(self.buf, self.pos);
        self.end -= self.pos + len;
        self.pos = 0;
        self.buf.split_to(len).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::required::tests::{Enc, LEAF};
    use super::*;
    use crate::method::MethodKind;

    static M: MethodDescriptor = MethodDescriptor {
        service: "s.S",
        method: "M",
        path: "/s.S/M",
        index: 0,
        request_type: "s.Req",
        response_type: "s.Resp",
        kind: MethodKind::Unary,
        files: &[],
    };

    #[derive(Clone, PartialEq, prost::Message)]
    struct Msg {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn messages_encode_exactly() {
        let msg = Msg {
            text: "hello".into(),
        };
        let bytes = encode_to_bytes(&msg);
        assert_eq!(bytes.len(), Encode::encoded_len(&msg));
        assert_eq!(bytes, msg.encode_to_vec());
        let back: Msg = decode_request(&M, bytes, None).expect("decodes");
        assert_eq!(back, msg);
    }

    #[test]
    fn raw_payload_is_unchanged() {
        let raw = RawPayload(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(encode_to_bytes(&raw), &[1u8, 2, 3][..]);
    }

    #[test]
    fn garbage_is_erequest_or_eresponse() {
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        let err = decode_request::<Msg>(&M, garbage.clone(), None).expect_err("garbage");
        assert_eq!(err.code(), Code::EREQUEST);
        assert!(
            err.message().starts_with("Fail to parse request=s.Req"),
            "{err}"
        );
        let err = decode_response::<Msg>(&M, garbage, None).expect_err("garbage");
        assert_eq!(err.code(), Code::ERESPONSE);
        assert!(
            err.message().starts_with("Fail to parse response=s.Resp"),
            "{err}"
        );
    }

    #[test]
    fn missing_required_is_erequest_or_eresponse() {
        let err = decode_request::<Msg>(&M, Bytes::new(), Some(&LEAF)).expect_err("missing");
        assert_eq!(err.code(), Code::EREQUEST);
        assert_eq!(
            err.message(),
            "Fail to parse request=s.Req, request_size=0, method=s.S.M: \
             missing required field s.Leaf.id"
        );
        let err = decode_response::<Msg>(&M, Bytes::from_static(&[0x0f]), Some(&LEAF))
            .expect_err("malformed");
        assert_eq!(err.code(), Code::ERESPONSE);
        assert!(
            err.message()
                .starts_with("Fail to parse response=s.Resp, response_size=1"),
            "{err}"
        );
        assert!(
            err.message().contains("malformed message at byte 0"),
            "{err}"
        );
        // Present: decoded as usual.
        let ok = Enc::default().bytes(1, b"x").0;
        let msg: Msg = decode_request(&M, ok.into(), Some(&LEAF)).expect("decodes");
        assert_eq!(msg.text, "x");
    }

    /// Fields on either side of the ones cut out of the buffer.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Fields {
        #[prost(uint64, tag = "1")]
        before: u64,
        #[prost(bytes = "vec", tag = "2")]
        vec: Vec<u8>,
        #[prost(bytes = "bytes", tag = "3")]
        shared: Bytes,
        #[prost(string, tag = "4")]
        text: String,
        #[prost(fixed32, repeated, tag = "5")]
        after: Vec<u32>,
        #[prost(bytes = "bytes", tag = "6")]
        small: Bytes,
    }

    /// Fields with a `shared` field of `shared` bytes.
    fn fields(shared: usize) -> Fields {
        Fields {
            before: 300,
            vec: vec![7; 40],
            shared: Bytes::from(vec![9; shared]),
            text: "last".into(),
            after: vec![1, 2, 3],
            small: Bytes::from_static(b"copied out"),
        }
    }

    #[test]
    fn a_message_decodes_in_place_and_leaves_what_follows() {
        // Over COPY_FIELD_MAX (read by InPlace, its large field cut out),
        // then under (read by Copied).
        let one = fields(COPY_FIELD_MAX + 1);
        let two = fields(3);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&one.encode_to_vec());
        buf.extend_from_slice(&two.encode_to_vec());
        buf.extend_from_slice(b"rest");
        let block = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let decode = |server: bool, buf: &mut BytesMut, like: &Fields| {
            let mut into = Fields::default();
            let len = Message::encoded_len(like);
            merge_in_place(server, &M, buf, len, None, &mut into).map(|()| into)
        };
        let first = decode(true, &mut buf, &one).expect("first");
        assert_eq!(first, one);
        // The large field lies in the buffer's block; the small one was
        // copied out of it.
        assert!(block.contains(&(first.shared.as_ptr() as usize)));
        assert!(!block.contains(&(first.small.as_ptr() as usize)));
        assert_eq!(buf.len(), Message::encoded_len(&two) + 4);
        let second = decode(false, &mut buf, &two).expect("second");
        assert_eq!(second, two);
        assert_eq!(&buf[..], b"rest");
        // A large `Bytes` field was cut out of the buffer, a small one
        // copied: either holds its bytes once the buffer is gone.
        drop(buf);
        assert_eq!(first.shared, one.shared);
        assert_eq!(first.small, one.small);
    }

    #[test]
    fn a_message_that_fails_in_place_is_consumed_whole() {
        // A message one byte shorter than its fields: its last field runs
        // past its end (not past the buffer's), so it fails, and only its
        // bytes go; a large message (InPlace) and a small one (Copied).
        for shared in [COPY_FIELD_MAX + 1, 3] {
            let mut wire = fields(shared).encode_to_vec();
            let last = *wire.last().expect("not empty");
            let len = wire.len() - 1;
            wire.extend_from_slice(b"next");
            let mut buf = BytesMut::from(&wire[..]);
            let mut into = Fields::default();
            let err =
                merge_in_place(false, &M, &mut buf, len, None, &mut into).expect_err("past end");
            assert_eq!(err.code(), Code::ERESPONSE);
            assert!(
                err.message().starts_with(&format!(
                    "Fail to parse response=s.Resp, response_size={len}"
                )),
                "{err}"
            );
            assert_eq!(buf[0], last);
            assert_eq!(&buf[1..], b"next");
            // A message prost gives up on after its fields were read (a
            // large one's cut out): the same.
            let mut wire = fields(shared).encode_to_vec();
            wire.push(0xff);
            let len = wire.len();
            wire.extend_from_slice(b"next");
            let mut buf = BytesMut::from(&wire[..]);
            let err = merge_in_place(true, &M, &mut buf, len, None, &mut Fields::default())
                .expect_err("bad tail");
            assert_eq!(err.code(), Code::EREQUEST);
            assert_eq!(&buf[..], b"next");
        }
    }
}
