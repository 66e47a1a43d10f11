//! The protobuf wire format, read in place: varints, field keys, length
//! prefixes, fixed-width values and groups, over a borrowed buffer, without a
//! `Message` type and without allocating.
//!
//! This is Keel's one protobuf wire reader. It owns the acceptance rules of
//! the wire format and the offsets errors report; it knows no message schema
//! (what a field number means is the caller's business), does no I/O and
//! never allocates. Two walkers stand on it:
//!
//! - [`MetaView::parse`](crate::baidu_std::MetaView::parse), the
//!   zero-allocation `RpcMeta` parser, reads every field's value and refuses
//!   groups (brpc never writes them);
//! - `keel::codec::RequiredSchema::check`, the proto2 `required`-field check,
//!   skips what it does not need, proto2 groups in user messages included.
//!
//! `fuzz/fuzz_targets/protowire.rs` checks it against prost on arbitrary
//! bytes.
//!
//! # What it accepts
//!
//! Exactly what prost (and protobuf-go's `ConsumeVarint`) accept, so that a
//! message one of them takes the other takes too:
//!
//! - a varint has at most 10 bytes, and a tenth byte of 0 or 1 (it holds bit
//!   63 only); non-minimal encodings (`80 80 00` for 0) are accepted;
//! - a key is a varint that fits 32 bits, with a non-zero field number and a
//!   wire type from 0 to 5;
//! - a length prefix is at most what is left of the message;
//! - a group ends with an end-group tag of its own field number, and groups
//!   nest at most [`RECURSION_LIMIT`] deep (prost's limit, C++ protobuf's
//!   default).
//!
//! # Offsets
//!
//! Every failure is a [`Malformed`]: a [`BadMetaReason`] and an offset
//! counted from the start of the buffer given to [`Reader::new`] (also for a
//! sub-message read with [`Reader::read_len`]), pointing at
//!
//! - a bad varint's first byte (key, value or length prefix), and the length
//!   prefix of a value that runs past the end of its message;
//! - a bad key's first byte (field number 0, wire type 6 or 7, more than 32
//!   bits; a key wrong in two ways reports the first of these);
//! - the key of a fixed-width value cut short, and of a stray end-group tag;
//! - the first byte after the start tag of a group that has no end tag or
//!   nests too deep.
//!
//! ```text
//!  offset   0  1  2  3  4  5  6  7  8  9 10
//!  byte    08 96 01 12 02 68 69 1b 08 01 1c
//!          ── ───── ── ── ───── ── ── ── ──
//!          │  150   │  2  "hi"  │  │  1  └ key: field 3, end group
//!          │        │           │  └ key: field 1, varint
//!          │        │           └ key: field 3, start group
//!          │        └ key: field 2, length-delimited, then its length
//!          └ key: field 1, varint
//! ```
//!
//! # Example
//!
//! ```
//! use keel_wire::protowire::{Reader, WireType, RECURSION_LIMIT};
//!
//! // field 1 = 150, field 2 = "hi", then group 3 holding field 1 = 1.
//! let mut reader = Reader::new(b"\x08\x96\x01\x12\x02hi\x1b\x08\x01\x1c");
//!
//! let key = reader.read_key()?;
//! assert_eq!((key.number, key.wire_type, key.offset), (1, WireType::Varint, 0));
//! assert_eq!(reader.read_varint()?, 150);
//!
//! let key = reader.read_key()?;
//! assert_eq!((key.number, key.wire_type), (2, WireType::Len));
//! assert_eq!(reader.read_len()?.remaining(), b"hi");
//!
//! let key = reader.read_key()?;
//! assert_eq!((key.number, key.wire_type), (3, WireType::StartGroup));
//! reader.skip_value(key, RECURSION_LIMIT)?;
//! assert!(reader.is_empty());
//!
//! // A length running past the end is reported at its length prefix.
//! let mut reader = Reader::new(b"\x12\x05hi");
//! let key = reader.read_key()?;
//! let err = reader.skip_value(key, RECURSION_LIMIT).unwrap_err();
//! assert_eq!((err.offset, err.reason), (1, keel_wire::BadMetaReason::Truncated));
//! # Ok::<(), keel_wire::protowire::Malformed>(())
//! ```

use crate::BadMetaReason;

/// How deep groups may nest under the top of a message before reading
/// fails with [`BadMetaReason::RecursionLimit`]: prost's limit, and C++
/// protobuf's default. Pass it as the `depth` of [`Reader::skip_value`] and
/// [`Reader::skip_group`] from the top of a message.
pub const RECURSION_LIMIT: u32 = 100;

/// The wire type of a field: how its value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WireType {
    /// 0: a varint (`int32`, `int64`, `uint*`, `sint*`, `bool`, enums).
    Varint = 0,
    /// 1: eight bytes (`fixed64`, `sfixed64`, `double`).
    Fixed64 = 1,
    /// 2: a length prefix and that many bytes (`string`, `bytes`, messages,
    /// packed repeated fields).
    Len = 2,
    /// 3: the start of a proto2 group; its fields follow, up to the
    /// end-group tag of the same field number.
    StartGroup = 3,
    /// 4: the end of a proto2 group.
    EndGroup = 4,
    /// 5: four bytes (`fixed32`, `sfixed32`, `float`).
    Fixed32 = 5,
}

impl WireType {
    /// The wire type numbered `bits`, if protobuf defines it (0 to 5).
    #[inline]
    const fn from_bits(bits: u32) -> Option<WireType> {
        Some(match bits {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::Fixed32,
            _ => return None,
        })
    }
}

/// A field key read by [`Reader::read_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The field number, at least 1.
    pub number: u32,
    /// How the value that follows is encoded.
    pub wire_type: WireType,
    /// Where the key starts, counted like [`Reader::offset`].
    pub offset: usize,
}

/// Bytes that are not the protobuf wire format: what is wrong, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {reason}")]
pub struct Malformed {
    /// Where the bad item starts, counted from the start of the buffer given
    /// to [`Reader::new`] (see the [module docs](self) for which item).
    pub offset: usize,
    /// What is wrong with it: one of the wire-format reasons of
    /// [`BadMetaReason`] (never `WrongWireType`, `InvalidUtf8` or `Group`,
    /// which are about a schema the reader does not know).
    pub reason: BadMetaReason,
}

#[cold]
fn malformed(offset: usize, reason: BadMetaReason) -> Malformed {
    Malformed { offset, reason }
}

/// A read position in an encoded message.
///
/// Reads stop at the end of the message: a [`read_len`](Self::read_len)
/// sub-reader cannot run past its length prefix. Offsets count from the start
/// of the buffer given to [`new`](Self::new), in sub-readers too, so an error
/// deep inside a message points into the bytes the caller holds.
///
/// After an error the position is unspecified: a malformed message cannot be
/// read further.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The bytes up to the end of the message being read.
    buf: &'a [u8],
    /// The next byte to read; never past `buf.len()`.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `message`.
    #[inline]
    pub const fn new(message: &'a [u8]) -> Reader<'a> {
        Reader {
            buf: message,
            pos: 0,
        }
    }

    /// The position of the next byte to read.
    #[inline]
    pub const fn offset(&self) -> usize {
        self.pos
    }

    /// Whether the message is read to its end.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The bytes not read yet, up to the end of the message.
    #[inline]
    pub fn remaining(&self) -> &'a [u8] {
        let buf: &'a [u8] = self.buf;
        buf.get(self.pos..).unwrap_or_default()
    }

    /// Reads a varint.
    ///
    /// Fails with [`BadMetaReason::TruncatedVarint`] when the message ends
    /// inside it, [`BadMetaReason::VarintOverflow`] when it does not fit 64
    /// bits (a tenth byte above 1, or more than ten bytes).
    #[inline]
    pub fn read_varint(&mut self) -> Result<u64, Malformed> {
        let at = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(malformed(at, BadMetaReason::TruncatedVarint));
            };
            // The tenth byte holds bit 63 only; anything more overflows (this
            // also rejects varints longer than 10 bytes).
            if i == 9 && byte > 1 {
                return Err(malformed(at, BadMetaReason::VarintOverflow));
            }
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        // The loop returns by its tenth byte at the latest.
        Err(malformed(at, BadMetaReason::VarintOverflow))
    }

    /// Reads a field key: field number and wire type.
    ///
    /// Fails like [`read_varint`](Self::read_varint), and with
    /// [`BadMetaReason::KeyOverflow`], [`BadMetaReason::FieldNumberZero`] or
    /// [`BadMetaReason::InvalidWireType`] (checked in that order), all at the
    /// key's first byte.
    #[inline]
    pub fn read_key(&mut self) -> Result<Key, Malformed> {
        let offset = self.pos;
        let Ok(key) = u32::try_from(self.read_varint()?) else {
            return Err(malformed(offset, BadMetaReason::KeyOverflow));
        };
        let number = key >> 3;
        if number == 0 {
            return Err(malformed(offset, BadMetaReason::FieldNumberZero));
        }
        let Some(wire_type) = WireType::from_bits(key & 7) else {
            return Err(malformed(offset, BadMetaReason::InvalidWireType));
        };
        Ok(Key {
            number,
            wire_type,
            offset,
        })
    }

    /// Reads the value of a length-delimited field (its key read): the
    /// length prefix, then that many bytes, returned as a reader over them
    /// (its [`remaining`](Self::remaining) is the value's bytes).
    ///
    /// Fails like [`read_varint`](Self::read_varint) for the prefix, and with
    /// [`BadMetaReason::Truncated`] at the prefix when the value runs past
    /// the end of the message.
    #[inline]
    pub fn read_len(&mut self) -> Result<Reader<'a>, Malformed> {
        let at = self.pos;
        let len = self.read_varint()?;
        let left = self.buf.len() - self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= left => {
                let start = self.pos;
                self.pos += len;
                let buf: &'a [u8] = self.buf;
                Ok(Reader {
                    buf: &buf[..self.pos],
                    pos: start,
                })
            }
            _ => Err(malformed(at, BadMetaReason::Truncated)),
        }
    }

    /// Skips the value of the field whose `key` was just read: a varint,
    /// fixed-width bytes, a length-delimited value, or a whole group (with
    /// [`skip_group`](Self::skip_group), `depth` levels allowed).
    ///
    /// Fails like the reads above, with [`BadMetaReason::TruncatedFixed`]
    /// at the key when fixed-width bytes are cut short, and with
    /// [`BadMetaReason::UnexpectedEndGroup`] at the key for an end-group tag
    /// (one that closes an open group is the caller's to recognise before
    /// calling this).
    #[inline]
    pub fn skip_value(&mut self, key: Key, depth: u32) -> Result<(), Malformed> {
        match key.wire_type {
            WireType::Varint => self.read_varint().map(drop),
            WireType::Fixed64 => self.skip_fixed(key, 8),
            WireType::Fixed32 => self.skip_fixed(key, 4),
            WireType::Len => self.read_len().map(drop),
            WireType::StartGroup => self.skip_group(key.number, depth),
            WireType::EndGroup => Err(malformed(key.offset, BadMetaReason::UnexpectedEndGroup)),
        }
    }

    /// Skips the `width` bytes of a fixed-width value.
    #[inline]
    fn skip_fixed(&mut self, key: Key, width: usize) -> Result<(), Malformed> {
        if width > self.buf.len() - self.pos {
            return Err(malformed(key.offset, BadMetaReason::TruncatedFixed));
        }
        self.pos += width;
        Ok(())
    }

    /// Skips the fields of a group whose start tag (field `number`) was just
    /// read, up to and including its end tag.
    ///
    /// `depth` is how many levels of groups may still be entered, this one
    /// included: [`RECURSION_LIMIT`] at the top of a message, or what the
    /// caller's own nesting has left. Fails with
    /// [`BadMetaReason::RecursionLimit`] when it is 0, with
    /// [`BadMetaReason::UnterminatedGroup`] when the message ends before the
    /// end tag, and with [`BadMetaReason::UnexpectedEndGroup`] for the end tag
    /// of another field number; both group errors are reported at the first
    /// byte after the start tag.
    pub fn skip_group(&mut self, number: u32, depth: u32) -> Result<(), Malformed> {
        let start = self.pos;
        let Some(depth) = depth.checked_sub(1) else {
            return Err(malformed(start, BadMetaReason::RecursionLimit));
        };
        loop {
            if self.is_empty() {
                return Err(malformed(start, BadMetaReason::UnterminatedGroup));
            }
            let key = self.read_key()?;
            if key.wire_type == WireType::EndGroup && key.number == number {
                return Ok(());
            }
            self.skip_value(key, depth)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(bytes: &[u8]) -> Result<(u64, usize), Malformed> {
        let mut reader = Reader::new(bytes);
        reader.read_varint().map(|v| (v, reader.offset()))
    }

    fn reason<T>(result: Result<T, Malformed>) -> Option<BadMetaReason> {
        result.err().map(|e| e.reason)
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
        assert_eq!(reason(varint(&over)), Some(BadMetaReason::VarintOverflow));
        over[9] = 0x81;
        assert_eq!(reason(varint(&over)), Some(BadMetaReason::VarintOverflow));
        assert_eq!(reason(varint(&[])), Some(BadMetaReason::TruncatedVarint));
        assert_eq!(
            reason(varint(&[0x80, 0x80])),
            Some(BadMetaReason::TruncatedVarint)
        );
        // Against prost, for many values.
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, !0 >> shift] {
                let mut bytes = Vec::new();
                prost::encoding::encode_varint(v, &mut bytes);
                assert_eq!(varint(&bytes), Ok((v, bytes.len())));
            }
        }
    }

    #[test]
    fn keys() {
        let key = |b: &[u8]| Reader::new(b).read_key();
        let ok = |number, wire_type| {
            Ok(Key {
                number,
                wire_type,
                offset: 0,
            })
        };
        assert_eq!(key(&[0x0a]), ok(1, WireType::Len));
        assert_eq!(key(&[0x80, 0x01]), ok(16, WireType::Varint));
        assert_eq!(key(&[0x0d]), ok(1, WireType::Fixed32));
        assert_eq!(reason(key(&[0x02])), Some(BadMetaReason::FieldNumberZero));
        assert_eq!(reason(key(&[0x0e])), Some(BadMetaReason::InvalidWireType));
        // Wrong two ways: the field number is checked first.
        assert_eq!(reason(key(&[0x07])), Some(BadMetaReason::FieldNumberZero));
        assert_eq!(
            reason(key(&[0x80, 0x80, 0x80, 0x80, 0x10])),
            Some(BadMetaReason::KeyOverflow)
        );
        // The largest field number.
        let mut max = Vec::new();
        prost::encoding::encode_key(
            (1 << 29) - 1,
            prost::encoding::WireType::StartGroup,
            &mut max,
        );
        assert_eq!(key(&max), ok((1 << 29) - 1, WireType::StartGroup));
    }

    /// Skips the one field in `bytes` (groups allowed `depth` deep).
    fn skip(bytes: &[u8], depth: u32) -> Result<usize, Malformed> {
        let mut reader = Reader::new(bytes);
        let key = reader.read_key()?;
        reader.skip_value(key, depth)?;
        Ok(reader.offset())
    }

    #[test]
    fn values_and_where_they_fail() {
        assert_eq!(skip(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0], 0), Ok(9));
        assert_eq!(skip(&[0x0d, 0, 0, 0, 0], 0), Ok(5));
        assert_eq!(skip(&[0x0a, 0x01, 0xff, 0x08], 0), Ok(3));
        assert_eq!(skip(&[0x08, 0x96, 0x01], 0), Ok(3));
        let failure = |offset, reason| Err(Malformed { offset, reason });
        // A fixed-width value cut short: at its key.
        assert_eq!(
            skip(&[0x09; 8], 0),
            failure(0, BadMetaReason::TruncatedFixed)
        );
        assert_eq!(
            skip(&[0x0d, 1, 2], 0),
            failure(0, BadMetaReason::TruncatedFixed)
        );
        // A length past the end: at the length prefix.
        assert_eq!(
            skip(&[0x0a, 0x03, 0, 0], 0),
            failure(1, BadMetaReason::Truncated)
        );
        let huge = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(skip(&huge, 0), failure(1, BadMetaReason::Truncated));
        // A bad varint value: at its first byte.
        assert_eq!(
            skip(&[0x08, 0x80], 0),
            failure(1, BadMetaReason::TruncatedVarint)
        );
        // A stray end-group tag: at the key.
        assert_eq!(
            skip(&[0x0c], 5),
            failure(0, BadMetaReason::UnexpectedEndGroup)
        );
    }

    #[test]
    fn sub_messages_keep_offsets_and_bounds() {
        // field 1: a message holding field 2 = varint cut short; then
        // field 3 = 1 outside it.
        let bytes = [0x0a, 0x02, 0x10, 0x80, 0x18, 0x01];
        let mut reader = Reader::new(&bytes);
        reader.read_key().unwrap();
        let mut inner = reader.read_len().unwrap();
        assert_eq!((inner.offset(), inner.remaining()), (2, &bytes[2..4]));
        assert_eq!(reader.offset(), 4);
        assert_eq!(inner.read_key().unwrap().offset, 2);
        // The varint may not run into field 3.
        assert_eq!(
            inner.read_varint(),
            Err(Malformed {
                offset: 3,
                reason: BadMetaReason::TruncatedVarint
            })
        );
        let key = reader.read_key().unwrap();
        assert_eq!((key.number, key.offset), (3, 4));
        assert_eq!(reader.read_varint(), Ok(1));
        assert!(reader.is_empty());
        assert_eq!(reader.remaining(), b"");
    }

    #[test]
    fn groups() {
        // group 1 { field 2 = 1, group 3 { field 1 = "x" } }
        let nested = [0x0b, 0x10, 0x01, 0x1b, 0x0a, 0x01, b'x', 0x1c, 0x0c];
        assert_eq!(skip(&nested, RECURSION_LIMIT), Ok(nested.len()));
        assert_eq!(skip(&nested, 2), Ok(nested.len()));
        // The inner group needs a second level.
        assert_eq!(
            skip(&nested, 1),
            Err(Malformed {
                offset: 4,
                reason: BadMetaReason::RecursionLimit
            })
        );
        assert_eq!(
            skip(&nested, 0),
            Err(Malformed {
                offset: 1,
                reason: BadMetaReason::RecursionLimit
            })
        );
        // No end tag: at the group's first byte after its start tag.
        assert_eq!(
            skip(&nested[..8], RECURSION_LIMIT),
            Err(Malformed {
                offset: 1,
                reason: BadMetaReason::UnterminatedGroup
            })
        );
        // Another field's end tag.
        assert_eq!(
            skip(&[0x0b, 0x14], RECURSION_LIMIT),
            Err(Malformed {
                offset: 1,
                reason: BadMetaReason::UnexpectedEndGroup
            })
        );
        // Exactly RECURSION_LIMIT levels, and one more.
        let deep = |levels: usize| {
            let mut bytes = vec![0x0b; levels];
            bytes.extend(std::iter::repeat_n(0x0c, levels));
            bytes
        };
        let limit = RECURSION_LIMIT as usize;
        assert_eq!(skip(&deep(limit), RECURSION_LIMIT), Ok(2 * limit));
        assert_eq!(
            reason(skip(&deep(limit + 1), RECURSION_LIMIT)),
            Some(BadMetaReason::RecursionLimit)
        );
    }

    #[test]
    fn errors_say_where() {
        let err = Reader::new(&[0x0f]).read_key().unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed protobuf at byte 0: a field key has an undefined wire type (6 or 7)"
        );
    }
}
