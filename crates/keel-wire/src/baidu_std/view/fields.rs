//! `RpcMeta`'s fields on the wire: read as typed [`Value`]s for
//! [`MetaView`](super::MetaView), and written with one-byte keys for the
//! encoders.
//!
//! Reading stands on [`crate::protowire`], the crate's one protobuf wire
//! reader, and adds what the meta needs on top of it: values by wire type,
//! errors that name the field ([`WireError::BadMetaField`]), and the refusal
//! of groups (wire types 3 and 4), which prost skips in unknown fields but
//! brpc never writes. This file may not read varints or keys itself; what is
//! accepted is `protowire`'s to decide. Writing is here because only the
//! meta encoders write protobuf by hand.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::protowire::{Key, Malformed, Reader, WireType};
use crate::{BadMetaReason, WireError};

/// Wire type 0, as a key writes it.
const VARINT: u8 = WireType::Varint as u8;
/// Wire type 2, as a key writes it.
const LEN: u8 = WireType::Len as u8;

/// One field's value, read according to its key's wire type.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (skipped: no field of the meta has it).
    Fixed64,
    /// Wire type 2: strings, bytes, messages, map entries.
    Len(&'a [u8]),
    /// Wire type 5 (skipped: no field of the meta has it).
    Fixed32,
}

/// The error for `field`.
#[cold]
pub(super) fn bad(field: &'static str, reason: BadMetaReason) -> WireError {
    WireError::BadMetaField { field, reason }
}

impl<'a> Value<'a> {
    /// The value of a varint field (`int32`, `int64`, `bool`).
    #[inline]
    pub(super) fn varint(self, field: &'static str) -> Result<u64, WireError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(bad(field, BadMetaReason::WrongWireType)),
        }
    }

    /// An `int32` field: protobuf truncates the 64-bit varint.
    #[inline]
    pub(super) fn int32(self, field: &'static str) -> Result<i32, WireError> {
        self.varint(field).map(|v| v as i32)
    }

    /// An `int64` field.
    #[inline]
    pub(super) fn int64(self, field: &'static str) -> Result<i64, WireError> {
        self.varint(field).map(|v| v as i64)
    }

    /// The bytes of a length-delimited field (`bytes`, or an embedded
    /// message to walk).
    #[inline]
    pub(super) fn bytes(self, field: &'static str) -> Result<&'a [u8], WireError> {
        match self {
            Value::Len(b) => Ok(b),
            _ => Err(bad(field, BadMetaReason::WrongWireType)),
        }
    }

    /// A proto2 `string` field, read as brpc (C++ protobuf) reads it: any
    /// bytes. Valid UTF-8 is borrowed; anything else is carried lossily
    /// (each invalid sequence replaced by U+FFFD), never an error: a peer
    /// whose error text is in another encoding still tells its error.
    #[inline]
    pub(super) fn text(self, field: &'static str) -> Result<Cow<'a, str>, WireError> {
        Ok(String::from_utf8_lossy(self.bytes(field)?))
    }
}

/// Reads the value of the field whose `key` was just read; groups are
/// refused.
#[inline]
fn read_value<'a>(reader: &mut Reader<'a>, key: Key) -> Result<Value<'a>, BadMetaReason> {
    let reason = |err: Malformed| err.reason;
    // Groups are refused before they are skipped, so `skip_value` meets none
    // and its group depth is moot.
    Ok(match key.wire_type {
        WireType::Varint => Value::Varint(reader.read_varint().map_err(reason)?),
        WireType::Len => Value::Len(reader.read_len().map_err(reason)?.remaining()),
        WireType::Fixed64 => reader
            .skip_value(key, 0)
            .map_err(reason)
            .map(|()| Value::Fixed64)?,
        WireType::Fixed32 => reader
            .skip_value(key, 0)
            .map_err(reason)
            .map(|()| Value::Fixed32)?,
        WireType::StartGroup | WireType::EndGroup => return Err(BadMetaReason::Group),
    })
}

/// One field of a message: its number, its value, and the offset of its key
/// in the message.
pub(super) struct Field<'a> {
    /// The field number.
    pub(super) number: u32,
    /// The value.
    pub(super) value: Value<'a>,
    /// Offset of the field's key from the start of the message.
    pub(super) at: usize,
}

/// Walks the fields of one message, in wire order, calling `on_field` for
/// each (known or not); fails at the first malformed key or value.
///
/// `name` maps a field number to the name errors report: the field's name
/// for known fields, the message's for unknown ones.
#[inline]
pub(super) fn walk<'a>(
    message: &'a [u8],
    name: fn(u32) -> &'static str,
    mut on_field: impl FnMut(Field<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut reader = Reader::new(message);
    while !reader.is_empty() {
        let key = reader.read_key().map_err(|err| bad(name(0), err.reason))?;
        let value = read_value(&mut reader, key).map_err(|reason| bad(name(key.number), reason))?;
        on_field(Field {
            number: key.number,
            value,
            at: key.offset,
        })?;
    }
    Ok(())
}

/// The fields of a message already known to be well formed, for walking it
/// again; stops at the first malformed field (which a validated message does
/// not have).
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    rest: Reader<'a>,
}

impl<'a> Fields<'a> {
    /// The fields of `message`.
    pub(super) fn new(message: &'a [u8]) -> Fields<'a> {
        Fields {
            rest: Reader::new(message),
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Value<'a>);

    fn next(&mut self) -> Option<(u32, Value<'a>)> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self
            .rest
            .read_key()
            .map_err(|err| err.reason)
            .and_then(|key| Ok((key.number, read_value(&mut self.rest, key)?)));
        // Fused: after the end, or after a malformed field, nothing more.
        if field.is_err() {
            self.rest = Reader::new(&[]);
        }
        field.ok()
    }
}

impl std::iter::FusedIterator for Fields<'_> {}

/// Bytes of `value` as a varint.
#[inline]
pub(super) const fn varint_len(value: u64) -> usize {
    // 1 byte per started 7 bits, and 1 for 0.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a varint.
#[inline]
pub(super) fn put_varint(dst: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        dst.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// The one-byte key of field `number` (< 16) with `wire_type`.
#[inline]
pub(super) const fn key(number: u8, wire_type: u8) -> u8 {
    debug_assert!(number > 0 && number < 16);
    (number << 3) | wire_type
}

/// Bytes of a varint field with a one-byte key.
#[inline]
pub(super) const fn varint_field_len(value: u64) -> usize {
    1 + varint_len(value)
}

/// Bytes of a length-delimited field of `len` bytes with a one-byte key.
#[inline]
pub(super) const fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Appends a varint field.
#[inline]
pub(super) fn put_varint_field(dst: &mut BytesMut, number: u8, value: u64) {
    dst.put_u8(key(number, VARINT));
    put_varint(dst, value);
}

/// Appends the key and length of a length-delimited field; its `len` bytes
/// follow.
#[inline]
pub(super) fn put_len_prefix(dst: &mut BytesMut, number: u8, len: usize) {
    dst.put_u8(key(number, LEN));
    put_varint(dst, len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_written_like_prost() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, !0 >> shift] {
                let mut out = BytesMut::new();
                put_varint(&mut out, v);
                assert_eq!(out.len(), varint_len(v));
                assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
                let mut theirs = Vec::new();
                prost::encoding::encode_varint(v, &mut theirs);
                assert_eq!(&out[..], &theirs[..]);
                assert_eq!(Reader::new(&out).read_varint(), Ok(v));
            }
        }
    }

    #[test]
    fn values_by_wire_type() {
        let value = |b: &[u8]| {
            let mut reader = Reader::new(b);
            let key = reader.read_key().map_err(|e| e.reason)?;
            read_value(&mut reader, key).map(|_| reader.offset())
        };
        // Groups are refused, at their start and at a stray end.
        assert_eq!(value(&[0x0b, 0x0c]), Err(BadMetaReason::Group));
        assert_eq!(value(&[0x0c]), Err(BadMetaReason::Group));
        assert_eq!(
            value(&[0x09, 0, 0, 0, 0, 0, 0, 0]),
            Err(BadMetaReason::TruncatedFixed)
        );
        assert_eq!(value(&[0x0d, 0, 0, 0]), Err(BadMetaReason::TruncatedFixed));
        assert_eq!(value(&[0x0a, 3, 0, 0]), Err(BadMetaReason::Truncated));
        assert_eq!(value(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0]), Ok(9));
        assert_eq!(value(&[0x0d, 0, 0, 0, 0]), Ok(5));
        assert_eq!(value(&[0x0a, 1, 0]), Ok(3));
        // Fields stops at the first malformed field.
        let fields: Vec<_> = Fields::new(&[0x08, 0x01, 0x0b, 0x08, 0x02])
            .map(|(n, _)| n)
            .collect();
        assert_eq!(fields, [1]);
    }
}
