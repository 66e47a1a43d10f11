//! The protobuf wire format, just enough of it to walk and write `RpcMeta`
//! without a `Message` type: varints, field keys, values over borrowed slices.
//!
//! Reading follows prost (and protobuf-go's `ConsumeVarint`) exactly, so that
//! what one accepts the other does too: varints of at most 10 bytes whose
//! tenth byte is 0 or 1, keys that fit 32 bits with a defined wire type and a
//! non-zero field number. One deliberate difference: groups (wire types 3 and
//! 4), which prost skips in unknown fields, are rejected; brpc never writes
//! them.

use bytes::{BufMut, BytesMut};

use crate::{BadMetaReason, WireError};

/// Wire type 0.
pub(super) const VARINT: u8 = 0;
/// Wire type 2.
pub(super) const LEN: u8 = 2;

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

    /// A `string` field, UTF-8 checked.
    #[inline]
    pub(super) fn string(self, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| bad(field, BadMetaReason::InvalidUtf8))
    }
}

/// Reads a varint off the front of `buf`.
#[inline]
pub(super) fn read_varint(buf: &mut &[u8]) -> Result<u64, BadMetaReason> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(BadMetaReason::TruncatedVarint);
        };
        // The tenth byte holds bit 63 only; anything more overflows (this
        // also rejects varints longer than 10 bytes).
        if i == 9 && byte > 1 {
            return Err(BadMetaReason::VarintOverflow);
        }
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    // The loop returns by its tenth byte at the latest.
    Err(BadMetaReason::VarintOverflow)
}

/// Reads a field key: the field number and the wire type.
#[inline]
fn read_key(buf: &mut &[u8]) -> Result<(u32, u8), BadMetaReason> {
    let key = u32::try_from(read_varint(buf)?).map_err(|_| BadMetaReason::KeyOverflow)?;
    let wire_type = (key & 7) as u8;
    if wire_type > 5 {
        return Err(BadMetaReason::InvalidWireType);
    }
    let number = key >> 3;
    if number == 0 {
        return Err(BadMetaReason::FieldNumberZero);
    }
    Ok((number, wire_type))
}

/// Takes `n` bytes off the front of `buf`.
#[inline]
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], BadMetaReason> {
    if n > buf.len() {
        return Err(BadMetaReason::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Reads the value of a field of `wire_type`.
#[inline]
fn read_value<'a>(wire_type: u8, buf: &mut &'a [u8]) -> Result<Value<'a>, BadMetaReason> {
    Ok(match wire_type {
        VARINT => Value::Varint(read_varint(buf)?),
        1 => take(buf, 8).map(|_| Value::Fixed64)?,
        LEN => {
            let len = read_varint(buf)?;
            let len = usize::try_from(len).map_err(|_| BadMetaReason::Truncated)?;
            Value::Len(take(buf, len)?)
        }
        5 => take(buf, 4).map(|_| Value::Fixed32)?,
        // 3 and 4; read_key rejected 6 and 7.
        _ => return Err(BadMetaReason::Group),
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
    let mut buf = message;
    while !buf.is_empty() {
        let at = message.len() - buf.len();
        let (number, wire_type) = read_key(&mut buf).map_err(|reason| bad(name(0), reason))?;
        let value = read_value(wire_type, &mut buf).map_err(|reason| bad(name(number), reason))?;
        on_field(Field { number, value, at })?;
    }
    Ok(())
}

/// The fields of a message already known to be well formed, for walking it
/// again; stops at the first malformed field (which a validated message does
/// not have).
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of `message`.
    pub(super) fn new(message: &'a [u8]) -> Fields<'a> {
        Fields { rest: message }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Value<'a>);

    fn next(&mut self) -> Option<(u32, Value<'a>)> {
        if self.rest.is_empty() {
            return None;
        }
        let mut buf = self.rest;
        let field = read_key(&mut buf).and_then(|(n, w)| Ok((n, read_value(w, &mut buf)?)));
        // Fused: after the end, or after a malformed field, nothing more.
        self.rest = if field.is_ok() { buf } else { &[] };
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

    fn varint(mut bytes: &[u8]) -> Result<(u64, usize), BadMetaReason> {
        let len = bytes.len();
        read_varint(&mut bytes).map(|v| (v, len - bytes.len()))
    }

    #[test]
    fn varints_like_prost() {
        assert_eq!(varint(&[0]), Ok((0, 1)));
        assert_eq!(varint(&[0x7f, 0xff]), Ok((127, 1)));
        assert_eq!(varint(&[0x96, 0x01]), Ok((150, 2)));
        // Non-minimal encodings are accepted, as protobuf does.
        assert_eq!(varint(&[0x80, 0x80, 0x00]), Ok((0, 3)));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&max), Ok((u64::MAX, 10)));
        // Bit 64 and beyond, and an 11th byte, overflow.
        let mut over = max;
        over[9] = 0x02;
        assert_eq!(varint(&over), Err(BadMetaReason::VarintOverflow));
        over[9] = 0x81;
        assert_eq!(varint(&over), Err(BadMetaReason::VarintOverflow));
        assert_eq!(varint(&[]), Err(BadMetaReason::TruncatedVarint));
        assert_eq!(varint(&[0x80, 0x80]), Err(BadMetaReason::TruncatedVarint));
        // Against prost, for many values.
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, !0 >> shift] {
                let mut out = BytesMut::new();
                put_varint(&mut out, v);
                assert_eq!(out.len(), varint_len(v));
                assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
                let mut theirs = Vec::new();
                prost::encoding::encode_varint(v, &mut theirs);
                assert_eq!(&out[..], &theirs[..]);
                assert_eq!(varint(&out), Ok((v, out.len())));
            }
        }
    }

    #[test]
    fn keys() {
        let key = |mut b: &[u8]| read_key(&mut b);
        assert_eq!(key(&[0x0a]), Ok((1, LEN)));
        assert_eq!(key(&[0x80, 0x01]), Ok((16, VARINT)));
        assert_eq!(key(&[0x02]), Err(BadMetaReason::FieldNumberZero));
        assert_eq!(key(&[0x0e]), Err(BadMetaReason::InvalidWireType));
        assert_eq!(
            key(&[0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(BadMetaReason::KeyOverflow)
        );
        let value = |w, mut b: &[u8]| read_value(w, &mut b).map(|_| ());
        assert_eq!(value(3, &[]), Err(BadMetaReason::Group));
        assert_eq!(value(4, &[]), Err(BadMetaReason::Group));
        assert_eq!(value(1, &[0; 7]), Err(BadMetaReason::Truncated));
        assert_eq!(value(5, &[0; 3]), Err(BadMetaReason::Truncated));
        assert_eq!(value(LEN, &[3, 0, 0]), Err(BadMetaReason::Truncated));
        assert_eq!(value(1, &[0; 8]), Ok(()));
        assert_eq!(value(5, &[0; 4]), Ok(()));
    }
}
