//! [`MetaView`]: an `RpcMeta` read in place, its strings borrowed from the
//! frame.

use std::borrow::Cow;
use std::fmt;

use super::fields::{Field, Fields, Value, walk};
use crate::WireError;
use crate::compress::CompressType;

/// An `RpcMeta` parsed without allocating: the meaning of
/// [`RpcMeta`](super::super::RpcMeta) with every string and byte field
/// borrowed from the meta bytes.
///
/// Parsing follows protobuf (and prost, the reference decoder) field by
/// field: absent fields read as their defaults, a scalar or string sent twice
/// keeps the last value, `request` or `response` sent twice are merged, and
/// unknown fields are skipped. Strings are proto2 strings, as brpc reads
/// them: any bytes. Valid UTF-8 (all that Keel and brpc write) is borrowed;
/// other bytes are carried lossily (U+FFFD for each invalid sequence, see
/// [`String::from_utf8_lossy`]) rather than refused, where prost refuses
/// them: a server's `error_text` in another encoding still reaches the
/// caller with its code, and fails neither the call's connection nor
/// anyone else's. The fields Keel does not act on are checked
/// for well-formedness like prost checks them, but not kept: `chunk_info`
/// (6), `stream_settings` (8), `content_type` (10), `checksum_type` (11)
/// and `checksum_value` (12). `user_fields` (9) are checked and can be
/// walked again through [`user_fields`](Self::user_fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaView<'a> {
    /// Set on requests: which method to call.
    pub request: Option<RequestView<'a>>,
    /// Set on responses: how the call ended.
    pub response: Option<ResponseView<'a>>,
    /// How the payload is compressed: a [`CompressType`] number.
    pub compress_type: i32,
    /// Chosen by the client; the response echoes it.
    pub correlation_id: i64,
    /// Length of the raw attachment at the end of the body.
    pub attachment_size: i32,
    /// Credentials checked by the server's authenticator.
    pub authentication_data: &'a [u8],
    /// `RpcMeta.user_fields`, kept as the meta bytes to walk again on demand.
    pub user_fields: UserFields<'a>,
}

/// The request half of a [`MetaView`] (`RpcRequestMeta`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestView<'a> {
    /// The service's full protobuf name, e.g. `example.EchoService`.
    pub service_name: Cow<'a, str>,
    /// The method's name within the service, e.g. `Echo`.
    pub method_name: Cow<'a, str>,
    /// A client-chosen id for logs.
    pub log_id: i64,
    /// rpcz trace id (0: none).
    pub trace_id: i64,
    /// rpcz span id of the client span (0: none).
    pub span_id: i64,
    /// rpcz span id of the client span's parent (0: none).
    pub parent_span_id: i64,
    /// Like HTTP's `x-request-id`.
    pub request_id: Cow<'a, str>,
    /// The client's timeout for this call, if it sent one.
    pub timeout_ms: Option<i32>,
}

/// The response half of a [`MetaView`] (`RpcResponseMeta`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseView<'a> {
    /// 0 on success, else a brpc error code (see
    /// [`errno`](super::super::errno)) or an application's own.
    pub error_code: i32,
    /// What went wrong, for people.
    pub error_text: Cow<'a, str>,
}

/// Field names of `RpcMeta`, for errors; 0 and unknown numbers name the
/// message.
fn rpc_meta_field(number: u32) -> &'static str {
    match number {
        1 => "RpcMeta.request",
        2 => "RpcMeta.response",
        3 => "RpcMeta.compress_type",
        4 => "RpcMeta.correlation_id",
        5 => "RpcMeta.attachment_size",
        6 => "RpcMeta.chunk_info",
        7 => "RpcMeta.authentication_data",
        8 => "RpcMeta.stream_settings",
        9 => "RpcMeta.user_fields",
        10 => "RpcMeta.content_type",
        11 => "RpcMeta.checksum_type",
        12 => "RpcMeta.checksum_value",
        _ => "RpcMeta",
    }
}

fn request_field(number: u32) -> &'static str {
    match number {
        1 => "RpcRequestMeta.service_name",
        2 => "RpcRequestMeta.method_name",
        3 => "RpcRequestMeta.log_id",
        4 => "RpcRequestMeta.trace_id",
        5 => "RpcRequestMeta.span_id",
        6 => "RpcRequestMeta.parent_span_id",
        7 => "RpcRequestMeta.request_id",
        8 => "RpcRequestMeta.timeout_ms",
        _ => "RpcRequestMeta",
    }
}

fn response_field(number: u32) -> &'static str {
    match number {
        1 => "RpcResponseMeta.error_code",
        2 => "RpcResponseMeta.error_text",
        _ => "RpcResponseMeta",
    }
}

fn chunk_info_field(number: u32) -> &'static str {
    match number {
        1 => "ChunkInfo.stream_id",
        2 => "ChunkInfo.chunk_id",
        _ => "ChunkInfo",
    }
}

fn stream_settings_field(number: u32) -> &'static str {
    match number {
        1 => "StreamSettings.stream_id",
        2 => "StreamSettings.need_feedback",
        3 => "StreamSettings.writable",
        _ => "StreamSettings",
    }
}

fn user_field_entry_field(number: u32) -> &'static str {
    match number {
        1 => "RpcMeta.user_fields.key",
        2 => "RpcMeta.user_fields.value",
        _ => "RpcMeta.user_fields",
    }
}

impl<'a> MetaView<'a> {
    /// Parses the `RpcMeta` in `meta` (a frame's first `meta_size` body
    /// bytes) without allocating.
    ///
    /// Accepts what prost accepts, except groups (wire types 3 and 4, which
    /// brpc never writes); fails with [`WireError::BadMetaField`] saying
    /// where and why otherwise.
    pub fn parse(meta: &'a [u8]) -> Result<MetaView<'a>, WireError> {
        let mut view = MetaView::default();
        let mut user_fields_at = None;
        walk(meta, rpc_meta_field, |Field { number, value, at }| {
            let name = rpc_meta_field(number);
            match number {
                1 => parse_request(value.bytes(name)?, view.request.get_or_insert_default())?,
                2 => parse_response(value.bytes(name)?, view.response.get_or_insert_default())?,
                3 => view.compress_type = value.int32(name)?,
                4 => view.correlation_id = value.int64(name)?,
                5 => view.attachment_size = value.int32(name)?,
                6 => check_varint_fields(value.bytes(name)?, chunk_info_field, 2)?,
                7 => view.authentication_data = value.bytes(name)?,
                8 => check_varint_fields(value.bytes(name)?, stream_settings_field, 3)?,
                9 => {
                    check_user_field(value.bytes(name)?)?;
                    user_fields_at.get_or_insert(at);
                }
                10 | 11 => {
                    value.int32(name)?;
                }
                12 => {
                    value.bytes(name)?;
                }
                _ => {}
            }
            Ok(())
        })?;
        if let Some(at) = user_fields_at {
            view.user_fields = UserFields {
                fields: &meta[at..],
            };
        }
        Ok(view)
    }

    /// The `user_fields` key/value pairs, in wire order.
    ///
    /// A key sent twice is yielded twice; as in a protobuf map the last one
    /// counts (see [`UserFields::get`]). Walks the meta bytes again on each
    /// call: nothing was stored when parsing.
    pub fn user_fields(&self) -> UserFieldsIter<'a> {
        self.user_fields.iter()
    }

    /// The response's error code: 0 for success, and for a meta without a
    /// response part.
    pub fn error_code(&self) -> i32 {
        self.response.as_ref().map_or(0, |r| r.error_code)
    }

    /// The payload's compression, or [`WireError::UnsupportedCompression`]
    /// for a number brpc does not define.
    pub fn compression(&self) -> Result<CompressType, WireError> {
        CompressType::try_from(self.compress_type)
    }
}

/// The `correlation_id` (field 4) of a meta [`MetaView::parse`] refused,
/// read from the fields before the first malformed one: the last one
/// sent there, if any. Lets a client fail the one call a malformed answer
/// was for, rather than the connection (a frame's length is still right,
/// so the next frame can be read).
pub fn salvage_correlation_id(meta: &[u8]) -> Option<i64> {
    let mut found = None;
    for (number, value) in Fields::new(meta) {
        if let (4, Value::Varint(v)) = (number, value) {
            found = Some(v as i64);
        }
    }
    found
}

/// Merges an `RpcRequestMeta` into `request`.
fn parse_request<'a>(bytes: &'a [u8], request: &mut RequestView<'a>) -> Result<(), WireError> {
    walk(bytes, request_field, |Field { number, value, .. }| {
        let name = request_field(number);
        match number {
            1 => request.service_name = value.text(name)?,
            2 => request.method_name = value.text(name)?,
            3 => request.log_id = value.int64(name)?,
            4 => request.trace_id = value.int64(name)?,
            5 => request.span_id = value.int64(name)?,
            6 => request.parent_span_id = value.int64(name)?,
            7 => request.request_id = value.text(name)?,
            8 => request.timeout_ms = Some(value.int32(name)?),
            _ => {}
        }
        Ok(())
    })
}

/// Merges an `RpcResponseMeta` into `response`.
fn parse_response<'a>(bytes: &'a [u8], response: &mut ResponseView<'a>) -> Result<(), WireError> {
    walk(bytes, response_field, |Field { number, value, .. }| {
        let name = response_field(number);
        match number {
            1 => response.error_code = value.int32(name)?,
            2 => response.error_text = value.text(name)?,
            _ => {}
        }
        Ok(())
    })
}

/// Checks a message whose known fields, 1 to `last`, are all varints
/// (`ChunkInfo`, `StreamSettings`).
fn check_varint_fields(
    bytes: &[u8],
    name: fn(u32) -> &'static str,
    last: u32,
) -> Result<(), WireError> {
    walk(bytes, name, |Field { number, value, .. }| {
        if (1..=last).contains(&number) {
            value.varint(name(number))?;
        }
        Ok(())
    })
}

/// Checks one `user_fields` map entry: key (1) and value (2) are strings
/// (length-delimited; any bytes, see [`MetaView`]).
fn check_user_field(bytes: &[u8]) -> Result<(), WireError> {
    walk(
        bytes,
        user_field_entry_field,
        |Field { number, value, .. }| {
            if number == 1 || number == 2 {
                value.bytes(user_field_entry_field(number))?;
            }
            Ok(())
        },
    )
}

/// `RpcMeta.user_fields` of a parsed [`MetaView`]: a `map<string, string>`
/// left in the meta bytes (already checked by [`MetaView::parse`]) and read
/// on demand.
///
/// Two `UserFields` are equal when they yield the same pairs in the same
/// order.
#[derive(Clone, Copy, Default)]
pub struct UserFields<'a> {
    /// The meta's fields from the first `user_fields` entry on; empty when
    /// there is none.
    fields: &'a [u8],
}

impl<'a> UserFields<'a> {
    /// The key/value pairs in wire order (a key sent twice comes twice).
    pub fn iter(&self) -> UserFieldsIter<'a> {
        UserFieldsIter {
            fields: Fields::new(self.fields),
        }
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The value for `key`: the last one sent, as a protobuf map keeps it.
    pub fn get(&self, key: &str) -> Option<Cow<'a, str>> {
        self.iter().filter(|(k, _)| k == key).last().map(|(_, v)| v)
    }
}

impl PartialEq for UserFields<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UserFields<'_> {}

impl fmt::Debug for UserFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for UserFields<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);
    type IntoIter = UserFieldsIter<'a>;

    fn into_iter(self) -> UserFieldsIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &UserFields<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);
    type IntoIter = UserFieldsIter<'a>;

    fn into_iter(self) -> UserFieldsIter<'a> {
        self.iter()
    }
}

/// Iterator over `user_fields` pairs: see [`MetaView::user_fields`].
#[derive(Debug, Clone)]
pub struct UserFieldsIter<'a> {
    fields: Fields<'a>,
}

impl<'a> Iterator for UserFieldsIter<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<(Cow<'a, str>, Cow<'a, str>)> {
        self.fields
            .find_map(|(number, value)| match (number, value) {
                (9, Value::Len(entry)) => Some(user_field(entry)),
                _ => None,
            })
    }
}

impl std::iter::FusedIterator for UserFieldsIter<'_> {}

/// The key and value of a map entry that [`check_user_field`] accepted;
/// missing ones are empty, repeated ones keep the last; bytes that are not
/// UTF-8 are carried lossily (see [`MetaView`]).
fn user_field(entry: &[u8]) -> (Cow<'_, str>, Cow<'_, str>) {
    let (mut key, mut value): (&[u8], &[u8]) = (b"", b"");
    for (number, v) in Fields::new(entry) {
        let slot = match number {
            1 => &mut key,
            2 => &mut value,
            _ => continue,
        };
        if let Value::Len(bytes) = v {
            *slot = bytes;
        }
    }
    (String::from_utf8_lossy(key), String::from_utf8_lossy(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BadMetaReason;

    #[test]
    fn empty_meta_is_all_defaults() {
        assert_eq!(MetaView::parse(&[]).unwrap(), MetaView::default());
    }

    #[test]
    fn nested_messages_merge_and_scalars_keep_the_last() {
        // request { service_name "a" log_id 1 } correlation_id 5
        // request { method_name "m" log_id 2 } correlation_id 6
        let meta = [
            0x0a, 0x05, 0x0a, 0x01, b'a', 0x18, 0x01, 0x20, 0x05, //
            0x0a, 0x05, 0x12, 0x01, b'm', 0x18, 0x02, 0x20, 0x06,
        ];
        let view = MetaView::parse(&meta).unwrap();
        let request = view.request.unwrap();
        assert_eq!(
            (
                &*request.service_name,
                &*request.method_name,
                request.log_id
            ),
            ("a", "m", 2)
        );
        assert_eq!(view.correlation_id, 6);
    }

    #[test]
    fn negative_int32_is_a_ten_byte_varint() {
        let mut meta = vec![0x28];
        meta.extend_from_slice(&[0xff; 9]);
        meta.push(0x01);
        assert_eq!(MetaView::parse(&meta).unwrap().attachment_size, -1);
    }

    #[test]
    fn strings_that_are_not_utf8_are_carried_lossily() {
        // request { service_name "\xff" } response { error_code 7
        // error_text "bad \xc3 text" } user_fields { "k\x80": "v" }
        let meta = [
            0x0a, 0x03, 0x0a, 0x01, 0xff, //
            0x12, 0x0e, 0x08, 0x07, 0x12, 0x0a, b'b', b'a', b'd', b' ', 0xc3, b' ', b't', b'e',
            b'x', b't', //
            0x4a, 0x07, 0x0a, 0x02, b'k', 0x80, 0x12, 0x01, b'v',
        ];
        let view = MetaView::parse(&meta).unwrap();
        assert_eq!(view.request.as_ref().unwrap().service_name, "\u{fffd}");
        let response = view.response.clone().unwrap();
        assert_eq!(response.error_code, 7);
        assert_eq!(response.error_text, "bad \u{fffd} text");
        let pairs: Vec<_> = view.user_fields().collect();
        assert_eq!(pairs, [("k\u{fffd}".into(), "v".into())]);
        // Valid UTF-8 is borrowed, not copied.
        let meta = [0x12, 0x04, 0x12, 0x02, b'o', b'k'];
        let view = MetaView::parse(&meta).unwrap();
        assert!(matches!(
            view.response.unwrap().error_text,
            Cow::Borrowed("ok")
        ));
    }

    #[test]
    fn a_correlation_id_is_salvaged_from_before_the_damage() {
        // correlation_id 9, then a key with wire type 7.
        let meta = [0x20, 0x09, 0x0f, 0x01];
        assert!(MetaView::parse(&meta).is_err());
        assert_eq!(salvage_correlation_id(&meta), Some(9));
        // Damage first: nothing to salvage.
        assert_eq!(salvage_correlation_id(&[0x0f, 0x20, 0x09]), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = MetaView::parse(&[0x0a, 0x02, 0x0a, 0x01]).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::BadMetaField {
                    field: "RpcRequestMeta.service_name",
                    reason: BadMetaReason::Truncated
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.code(), "bad_meta");
        let e = MetaView::parse(&[0x08, 0x01]).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::BadMetaField {
                    field: "RpcMeta.request",
                    reason: BadMetaReason::WrongWireType
                }
            ),
            "{e:?}"
        );
        let e = MetaView::parse(&[0xa3, 0x06, 0xa4, 0x06]).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::BadMetaField {
                    field: "RpcMeta",
                    reason: BadMetaReason::Group
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn user_fields_walk_again() {
        // user_fields { "k": "1" } correlation_id 3 user_fields { "j": "2" }
        // user_fields { "k": "3" }
        let meta = [
            0x4a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'1', 0x20, 0x03, //
            0x4a, 0x06, 0x0a, 0x01, b'j', 0x12, 0x01, b'2', //
            0x4a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'3',
        ];
        let view = MetaView::parse(&meta).unwrap();
        let pairs: Vec<_> = view.user_fields().collect();
        assert_eq!(
            pairs,
            [("k", "1"), ("j", "2"), ("k", "3")].map(|(k, v)| (Cow::from(k), Cow::from(v)))
        );
        assert_eq!(view.user_fields.get("k").as_deref(), Some("3"));
        assert_eq!(view.user_fields.get("x"), None);
        assert!(!view.user_fields.is_empty());
        assert!(
            MetaView::parse(&[0x20, 0x03])
                .unwrap()
                .user_fields
                .is_empty()
        );
        assert_eq!(
            format!("{:?}", view.user_fields),
            r#"[("k", "1"), ("j", "2"), ("k", "3")]"#
        );
    }
}
