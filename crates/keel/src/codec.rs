//! Payload encoding and decoding shared by clients, servers and transports.
//!
//! Transports receive the request as `&dyn Encode` rather than as bytes, so
//! a socket transport can compute the frame size up front and encode the
//! message straight into its write buffer — no intermediate copy. Decoding
//! takes [`Bytes`], so `bytes` fields can borrow from the received frame.
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

/// A request payload a transport can size and write: every prost message,
/// and [`RawPayload`] for bytes that are already encoded.
pub trait Encode {
    /// Exact number of bytes [`encode_to`](Encode::encode_to) appends.
    fn encoded_len(&self) -> usize;

    /// Appends the encoding to `buf`, growing it if needed.
    fn encode_to(&self, buf: &mut BytesMut);
}

impl<M: Message> Encode for M {
    fn encoded_len(&self) -> usize {
        Message::encoded_len(self)
    }

    fn encode_to(&self, buf: &mut BytesMut) {
        buf.reserve(Message::encoded_len(self));
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
    let fail = |reason: &dyn fmt::Display| {
        // brpc's wording, so operators can grep one text for both.
        let (code, what, type_name) = match side {
            Side::Request => (Code::EREQUEST, "request", method.request_type),
            Side::Response => (Code::ERESPONSE, "response", method.response_type),
        };
        Status::new(
            code,
            format!(
                "Fail to parse {what}={type_name}, {what}_size={len}, method={method}: {reason}"
            ),
        )
    };
    if let Some(schema) = required {
        schema.check(&payload).map_err(|err| fail(&err))?;
    }
    into.merge(payload).map_err(|err| fail(&err))
}

/// Presence checks of proto2 `required` fields, generated by keel-build.
///
/// keel-build implements it for every message type that has `required`
/// fields, or that can hold one (singular, repeated, `oneof` or map value)
/// whose type needs the check — recursively. Other types get no impl, and
/// call sites pass `None` instead of their table (see the
/// [module docs](self)), so proto3 code pays nothing for this.
///
/// ```
/// use keel::codec::RequiredFields;
///
/// mod example {
///     keel::include_proto!("example");
/// }
/// use example::EchoRequest;
///
/// assert_eq!(EchoRequest::missing_required(b""), Some("example.EchoRequest.message"));
/// assert_eq!(EchoRequest::missing_required(b"\x0a\x02hi"), None);
/// ```
pub trait RequiredFields {
    /// The generated table [`missing_required`](Self::missing_required) walks;
    /// pass `Some(T::REQUIRED)` to [`decode_request`] and friends.
    const REQUIRED: &'static RequiredSchema;

    /// Checks the ENCODED message: every required field of it and of its
    /// sub-messages is present. Returns the dotted path of the first missing
    /// field, e.g. `"example.EchoRequest.message"`: the message's own fields
    /// first (by number), then the first sub-message found lacking one.
    ///
    /// Bytes that are not a well-formed message return `None`, since
    /// decoding reports them; [`RequiredSchema::check`] tells the two apart.
    /// Walks the wire format once and never allocates.
    fn missing_required(encoded: &[u8]) -> Option<&'static str> {
        Self::REQUIRED.missing(encoded)
    }
}

/// One message type's `required` fields and the fields that hold
/// sub-messages needing a check: the table keel-build generates as a
/// `static` and [`check`](RequiredSchema::check) walks.
#[derive(Debug)]
pub struct RequiredSchema {
    /// Full protobuf name, e.g. `example.EchoRequest`.
    pub message: &'static str,
    /// The required fields, by ascending number.
    pub required: &'static [RequiredField],
    /// The fields whose message type needs a check, by ascending number.
    pub nested: &'static [NestedField],
    /// A map entry (`key = 1`, `value = 2`): a value missing from its entry
    /// is an empty message, so the value type's required fields are missing
    /// (as C++ protobuf, hence brpc, sees it).
    pub map_entry: bool,
}

/// A `required` field of a [`RequiredSchema`].
#[derive(Debug)]
pub struct RequiredField {
    /// The field number.
    pub number: u32,
    /// `message.full.Name.field`, e.g. `example.EchoRequest.message`: what a
    /// failure names.
    pub path: &'static str,
}

/// A field of a [`RequiredSchema`] holding sub-messages whose type needs a
/// check (singular, repeated, `oneof` member or map entry).
#[derive(Debug)]
pub struct NestedField {
    /// The field number.
    pub number: u32,
    /// Encoded as a proto2 group (start/end tags) rather than
    /// length-delimited.
    pub group: bool,
    /// The sub-message's table.
    pub schema: &'static RequiredSchema,
}

/// Why [`RequiredSchema::check`] rejected a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequiredError {
    /// A required field is absent; its dotted path.
    #[error("missing required field {0}")]
    Missing(&'static str),
    /// The bytes are not a well-formed protobuf message.
    #[error("malformed message at byte {offset}: {reason}")]
    Malformed {
        /// Where the bad field (or value) starts in the checked bytes.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Nesting deeper than this is refused, as prost refuses to decode it: a
/// hostile message cannot overflow the stack.
const RECURSION_LIMIT: u32 = 100;

impl RequiredSchema {
    /// Checks the encoded message `encoded`: `Ok` if every required field of
    /// it and of the sub-messages it holds is present. Walks the wire format
    /// once, skipping fields it does not need (unknown ones included) and
    /// descending only into sub-messages whose type has required fields; no
    /// allocation.
    pub fn check(&self, encoded: &[u8]) -> Result<(), RequiredError> {
        let mut wire = Wire {
            buf: encoded,
            pos: 0,
        };
        match self.walk(&mut wire, encoded.len(), None, RECURSION_LIMIT)? {
            Some(path) => Err(RequiredError::Missing(path)),
            None => Ok(()),
        }
    }

    /// The path of the first missing required field; `None` when all are
    /// present or the bytes are malformed (see [`RequiredFields::missing_required`]).
    pub fn missing(&self, encoded: &[u8]) -> Option<&'static str> {
        match self.check(encoded) {
            Err(RequiredError::Missing(path)) => Some(path),
            _ => None,
        }
    }

    /// Walks the fields of one message, `wire.buf[wire.pos..end]` — or, for a
    /// group, up to and including the end-group tag of field `group`.
    /// Returns the first missing required field, own fields first.
    fn walk(
        &self,
        wire: &mut Wire<'_>,
        end: usize,
        group: Option<u32>,
        depth: u32,
    ) -> Result<Option<&'static str>, RequiredError> {
        let start = wire.pos;
        let Some(depth) = depth.checked_sub(1) else {
            return Err(malformed(start, "nesting exceeds the recursion limit"));
        };
        // Bit i: `required[i]` seen (the first 64; later ones, if a message
        // ever has more, are found by `scan`).
        let mut seen = 0u64;
        let mut value_seen = false;
        let mut nested_missing = None;
        let body_end = loop {
            if wire.pos == end {
                if group.is_some() {
                    return Err(malformed(start, "group has no end tag"));
                }
                break end;
            }
            let key_at = wire.pos;
            let (number, wire_type) = wire.key(end)?;
            match wire_type {
                WIRE_START_GROUP => match self.nested_field(number) {
                    Some(field) if field.group && nested_missing.is_none() => {
                        nested_missing = field.schema.walk(wire, end, Some(number), depth)?;
                    }
                    _ => wire.skip_group(number, end, depth)?,
                },
                WIRE_END_GROUP if group == Some(number) => break key_at,
                WIRE_LEN => {
                    let len = wire.len_prefix(end)?;
                    let body_end = wire.pos + len;
                    match self.nested_field(number) {
                        Some(field) if !field.group && nested_missing.is_none() => {
                            nested_missing = field.schema.walk(wire, body_end, None, depth)?;
                        }
                        _ => {}
                    }
                    wire.pos = body_end;
                }
                _ => wire.skip_scalar(key_at, wire_type, end)?,
            }
            if let Some(i) = find(self.required, number, |f| f.number) {
                if i < 64 {
                    seen |= 1 << i;
                }
            }
            value_seen |= number == 2;
        };

        for (i, field) in self.required.iter().take(64).enumerate() {
            if seen & (1 << i) == 0 {
                return Ok(Some(field.path));
            }
        }
        for chunk in self.required.chunks(64).skip(1) {
            let seen = scan(wire.buf, start, body_end, chunk, depth)?;
            for (i, field) in chunk.iter().enumerate() {
                if seen & (1 << i) == 0 {
                    return Ok(Some(field.path));
                }
            }
        }
        if self.map_entry && !value_seen {
            let value = self.nested_field(2).and_then(|v| v.schema.required.first());
            if let Some(field) = value {
                return Ok(Some(field.path));
            }
        }
        Ok(nested_missing)
    }

    fn nested_field(&self, number: u32) -> Option<&'static NestedField> {
        let nested: &'static [NestedField] = self.nested;
        find(nested, number, |n| n.number).map(|i| &nested[i])
    }
}

/// Which of `fields` (at most 64) occur among the fields in
/// `buf[start..end]`, already found well-formed by `walk`.
fn scan(
    buf: &[u8],
    start: usize,
    end: usize,
    fields: &[RequiredField],
    depth: u32,
) -> Result<u64, RequiredError> {
    let mut wire = Wire { buf, pos: start };
    let mut seen = 0u64;
    while wire.pos < end {
        let key_at = wire.pos;
        let (number, wire_type) = wire.key(end)?;
        match wire_type {
            WIRE_START_GROUP => wire.skip_group(number, end, depth)?,
            WIRE_LEN => {
                let len = wire.len_prefix(end)?;
                wire.pos += len;
            }
            _ => wire.skip_scalar(key_at, wire_type, end)?,
        }
        if let Some(i) = find(fields, number, |f| f.number) {
            seen |= 1 << i;
        }
    }
    Ok(seen)
}

/// Index of the entry numbered `number` in `items`, sorted by number.
fn find<T>(items: &[T], number: u32, key: impl Fn(&T) -> u32) -> Option<usize> {
    items.binary_search_by_key(&number, key).ok()
}

fn malformed(offset: usize, reason: &'static str) -> RequiredError {
    RequiredError::Malformed { offset, reason }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;

/// A read position in an encoded message; every read is bounded by the
/// `end` of the message being walked, so a sub-message cannot run past its
/// length prefix.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Wire<'_> {
    /// A varint of at most 10 bytes, the 10th at most 1 (as prost reads it).
    fn varint(&mut self, end: usize) -> Result<u64, RequiredError> {
        let at = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf[..end].get(self.pos) else {
                return Err(malformed(at, "truncated varint"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(malformed(at, "varint overflows 64 bits"))
    }

    /// A field key: field number and wire type.
    fn key(&mut self, end: usize) -> Result<(u32, u8), RequiredError> {
        let at = self.pos;
        let key = self.varint(end)?;
        let Ok(key) = u32::try_from(key) else {
            return Err(malformed(at, "field key exceeds 32 bits"));
        };
        if key >> 3 == 0 {
            return Err(malformed(at, "field number 0"));
        }
        Ok((key >> 3, (key & 7) as u8))
    }

    /// A length prefix whose bytes all lie before `end`.
    fn len_prefix(&mut self, end: usize) -> Result<usize, RequiredError> {
        let at = self.pos;
        let len = self.varint(end)?;
        match usize::try_from(len) {
            Ok(len) if len <= end - self.pos => Ok(len),
            _ => Err(malformed(at, "length-delimited field runs past the end")),
        }
    }

    /// Skips a varint or fixed-width value (the key at `key_at` is read).
    fn skip_scalar(
        &mut self,
        key_at: usize,
        wire_type: u8,
        end: usize,
    ) -> Result<(), RequiredError> {
        let width = match wire_type {
            WIRE_VARINT => return self.varint(end).map(drop),
            WIRE_FIXED64 => 8,
            WIRE_FIXED32 => 4,
            WIRE_END_GROUP => return Err(malformed(key_at, "unexpected end-group tag")),
            _ => return Err(malformed(key_at, "invalid wire type")),
        };
        if width > end - self.pos {
            return Err(malformed(key_at, "truncated fixed-width field"));
        }
        self.pos += width;
        Ok(())
    }

    /// Skips a group whose start tag (field `number`) is read, up to and
    /// including its end tag.
    fn skip_group(&mut self, number: u32, end: usize, depth: u32) -> Result<(), RequiredError> {
        let start = self.pos;
        let Some(depth) = depth.checked_sub(1) else {
            return Err(malformed(start, "nesting exceeds the recursion limit"));
        };
        loop {
            if self.pos == end {
                return Err(malformed(start, "group has no end tag"));
            }
            let key_at = self.pos;
            let (inner, wire_type) = self.key(end)?;
            match wire_type {
                WIRE_END_GROUP if inner == number => return Ok(()),
                WIRE_START_GROUP => self.skip_group(inner, end, depth)?,
                WIRE_LEN => {
                    let len = self.len_prefix(end)?;
                    self.pos += len;
                }
                _ => self.skip_scalar(key_at, wire_type, end)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::encoding::{WireType, encode_key, encode_varint};

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

    // The tables keel-build would generate for
    //
    //   message Leaf { required int32 id = 1; }
    //   message Tree {
    //     required string name = 1;
    //     optional Leaf leaf = 2;
    //     repeated Leaf leaves = 3;
    //     map<string, Leaf> by_name = 4;
    //     optional group G = 5 { required int32 x = 6; }
    //     optional Tree child = 7;
    //   }
    static LEAF: RequiredSchema = RequiredSchema {
        message: "s.Leaf",
        required: &[RequiredField {
            number: 1,
            path: "s.Leaf.id",
        }],
        nested: &[],
        map_entry: false,
    };
    static BY_NAME_ENTRY: RequiredSchema = RequiredSchema {
        message: "s.Tree.ByNameEntry",
        required: &[],
        nested: &[NestedField {
            number: 2,
            group: false,
            schema: &LEAF,
        }],
        map_entry: true,
    };
    static G: RequiredSchema = RequiredSchema {
        message: "s.Tree.G",
        required: &[RequiredField {
            number: 6,
            path: "s.Tree.G.x",
        }],
        nested: &[],
        map_entry: false,
    };
    static TREE: RequiredSchema = RequiredSchema {
        message: "s.Tree",
        required: &[RequiredField {
            number: 1,
            path: "s.Tree.name",
        }],
        nested: &[
            NestedField {
                number: 2,
                group: false,
                schema: &LEAF,
            },
            NestedField {
                number: 3,
                group: false,
                schema: &LEAF,
            },
            NestedField {
                number: 4,
                group: false,
                schema: &BY_NAME_ENTRY,
            },
            NestedField {
                number: 5,
                group: true,
                schema: &G,
            },
            NestedField {
                number: 7,
                group: false,
                schema: &TREE,
            },
        ],
        map_entry: false,
    };

    /// A hand encoder: enough to write what prost would not (missing
    /// required fields, garbage).
    #[derive(Default)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn varint(mut self, number: u32, value: u64) -> Self {
            encode_key(number, WireType::Varint, &mut self.0);
            encode_varint(value, &mut self.0);
            self
        }
        fn bytes(mut self, number: u32, value: &[u8]) -> Self {
            encode_key(number, WireType::LengthDelimited, &mut self.0);
            encode_varint(value.len() as u64, &mut self.0);
            self.0.extend_from_slice(value);
            self
        }
        fn msg(self, number: u32, value: Enc) -> Self {
            self.bytes(number, &value.0)
        }
        fn group(mut self, number: u32, body: Enc) -> Self {
            encode_key(number, WireType::StartGroup, &mut self.0);
            self.0.extend_from_slice(&body.0);
            encode_key(number, WireType::EndGroup, &mut self.0);
            self
        }
        fn fixed(mut self, number: u32, wire: WireType, width: usize) -> Self {
            encode_key(number, wire, &mut self.0);
            self.0.extend(std::iter::repeat_n(0xAB, width));
            self
        }
    }

    fn leaf() -> Enc {
        Enc::default().varint(1, 7)
    }

    fn full_tree() -> Enc {
        Enc::default()
            .bytes(1, b"root")
            .msg(2, leaf())
            .msg(3, leaf())
            .msg(3, leaf())
            .msg(4, Enc::default().bytes(1, b"k").msg(2, leaf()))
            .group(5, Enc::default().varint(6, 1))
            .msg(7, Enc::default().bytes(1, b"child").msg(2, leaf()))
    }

    #[test]
    fn present_fields_pass() {
        assert_eq!(TREE.check(&full_tree().0), Ok(()));
        assert_eq!(TREE.check(&Enc::default().bytes(1, b"").0), Ok(()));
        assert_eq!(LEAF.missing(&leaf().0), None);
    }

    #[test]
    fn missing_top_level_field() {
        assert_eq!(TREE.check(b""), Err(RequiredError::Missing("s.Tree.name")));
        let no_name = Enc::default().msg(2, leaf());
        assert_eq!(TREE.missing(&no_name.0), Some("s.Tree.name"));
        // Own fields are reported before a sub-message's.
        let both = Enc::default().msg(2, Enc::default());
        assert_eq!(TREE.missing(&both.0), Some("s.Tree.name"));
    }

    #[test]
    fn missing_nested_field_in_every_kind_of_sub_message() {
        let named = || Enc::default().bytes(1, b"n");
        let cases = [
            ("singular", named().msg(2, Enc::default()), "s.Leaf.id"),
            (
                "second of repeated",
                named().msg(3, leaf()).msg(3, Enc::default().varint(9, 1)),
                "s.Leaf.id",
            ),
            (
                "map value",
                named().msg(4, Enc::default().bytes(1, b"k").msg(2, Enc::default())),
                "s.Leaf.id",
            ),
            (
                "map value absent from its entry",
                named().msg(4, Enc::default().bytes(1, b"k")),
                "s.Leaf.id",
            ),
            ("group", named().group(5, Enc::default()), "s.Tree.G.x"),
            ("recursive", named().msg(7, Enc::default()), "s.Tree.name"),
            (
                "two levels down",
                named().msg(7, named().msg(7, named().msg(2, Enc::default()))),
                "s.Leaf.id",
            ),
        ];
        for (name, bytes, path) in cases {
            assert_eq!(
                TREE.check(&bytes.0),
                Err(RequiredError::Missing(path)),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let unknown = Enc::default()
            .varint(100, u64::MAX)
            .fixed(101, WireType::SixtyFourBit, 8)
            .fixed(102, WireType::ThirtyTwoBit, 4)
            // Not a message Tree knows: its bytes are not walked.
            .bytes(103, &[0xff, 0xff])
            .group(
                104,
                Enc::default().varint(1, 1).group(2, leaf()).bytes(3, b"x"),
            );
        let mut bytes = unknown.0.clone();
        bytes.extend_from_slice(&full_tree().0);
        bytes.extend_from_slice(&unknown.0);
        assert_eq!(TREE.check(&bytes), Ok(()));
        // Unknown fields inside sub-messages too.
        let leaf_with_unknown = Enc::default().group(9, Enc::default()).varint(1, 2);
        let tree = Enc::default().bytes(1, b"n").msg(2, leaf_with_unknown);
        assert_eq!(TREE.check(&tree.0), Ok(()));
        // A required field sent with another wire type still counts as
        // present (prost then rejects the type).
        assert_eq!(LEAF.check(&Enc::default().bytes(1, b"").0), Ok(()));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let nested_truncated = Enc::default().bytes(1, b"n").bytes(2, &[0x08, 0x80]);
        let cases: [(&str, &[u8], &str); 10] = [
            ("key without length", &[0x0a], "truncated varint"),
            (
                "length past the end",
                &[0x0a, 0x05, b'a'],
                "runs past the end",
            ),
            ("truncated key", &[0x80], "truncated varint"),
            ("field number 0", &[0x00, 0x00], "field number 0"),
            ("wire type 7", &[0x0f], "invalid wire type"),
            ("stray end-group tag", &[0x0c], "unexpected end-group"),
            ("group never ended", &[0x2b, 0x30, 0x01], "no end tag"),
            (
                "fixed64 cut short",
                &[0x09, 1, 2, 3],
                "truncated fixed-width",
            ),
            (
                "10-byte varint over 64 bits",
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                "overflows",
            ),
            (
                "sub-message cut inside",
                &nested_truncated.0,
                "truncated varint",
            ),
        ];
        for (name, bytes, reason) in cases {
            match TREE.check(bytes) {
                Err(RequiredError::Malformed { reason: r, .. }) => {
                    assert!(r.contains(reason), "{name}: {r}");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(TREE.missing(bytes), None, "{name}");
        }
        // Offsets point into the checked bytes.
        assert_eq!(
            TREE.check(&[0x0a, 0x01, b'n', 0x0f]),
            Err(RequiredError::Malformed {
                offset: 3,
                reason: "invalid wire type"
            })
        );

        // Every cut of a valid message, and a pile of pseudo-random bytes:
        // an answer, never a panic.
        let full = full_tree().0;
        for cut in 0..full.len() {
            let _ = TREE.check(&full[..cut]);
        }
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..2_000 {
            let bytes: Vec<u8> = (0..len % 40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            let _ = TREE.check(&bytes);
        }
    }

    #[test]
    fn deep_nesting_hits_the_recursion_limit() {
        let mut deep = Enc::default().bytes(1, b"n");
        for _ in 0..150 {
            deep = Enc::default().bytes(1, b"n").msg(7, deep);
        }
        assert!(
            matches!(TREE.check(&deep.0), Err(RequiredError::Malformed { reason, .. }) if reason.contains("recursion")),
            "{:?}",
            TREE.check(&deep.0)
        );
        let mut groups = Enc::default();
        for _ in 0..150 {
            groups = Enc::default().group(50, groups);
        }
        assert!(matches!(
            TREE.check(&groups.0),
            Err(RequiredError::Malformed { .. })
        ));
        // Within the limit it answers normally.
        let mut fine = Enc::default().bytes(1, b"n");
        for _ in 0..50 {
            fine = Enc::default().bytes(1, b"n").msg(7, fine);
        }
        assert_eq!(TREE.check(&fine.0), Ok(()));
    }

    #[test]
    fn more_than_64_required_fields() {
        let required: Vec<RequiredField> = (1..=70)
            .map(|number| RequiredField {
                number,
                path: Box::leak(format!("s.Wide.f{number}").into_boxed_str()),
            })
            .collect();
        let wide: &'static RequiredSchema = Box::leak(Box::new(RequiredSchema {
            message: "s.Wide",
            required: required.leak(),
            nested: &[],
            map_entry: false,
        }));
        let all = (1..=70).fold(Enc::default(), |e, n| e.varint(n, 1));
        assert_eq!(wide.check(&all.0), Ok(()));
        for skip in [1, 64, 65, 70] {
            let bytes = (1..=70)
                .filter(|&n| n != skip)
                .rev()
                .fold(Enc::default(), |e, n| e.varint(n, 1));
            let expected = format!("s.Wide.f{skip}");
            assert_eq!(wide.missing(&bytes.0), Some(expected.as_str()));
        }
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
}
