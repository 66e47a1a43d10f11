//! Arbitrary bytes through `keel_wire::protowire`, Keel's one protobuf wire
//! reader, checked against prost wherever the two must agree:
//!
//! - a varint and a key read at every offset: the same value, the same
//!   length, and a failure exactly where prost's `decode_varint` and
//!   `decode_key` fail;
//! - the input as a message of unknown fields, groups included: the reader
//!   (`read_key` + `skip_value`) accepts exactly what prost's decoding of
//!   `google.protobuf.Empty` accepts, except where either hits its recursion
//!   limit (the two count a group's fields one level apart); and so does
//!   every length-delimited value in it, walked as a message in turn;
//! - every error's offset points at what it names (the bad varint or key,
//!   the length prefix that runs past the end, the key of a cut-short
//!   fixed-width value or of a stray end-group tag), inside the message it
//!   was read from;
//! - sub-readers stay inside their length prefix and count offsets from the
//!   start of the input.
//!
//! This target owns the reader's agreement with prost; decoding of whole
//! frames and metas is `baidu_std_decode`'s. Nothing may panic.
#![no_main]

use keel_wire::BadMetaReason;
use keel_wire::protowire::{Key, Malformed, RECURSION_LIMIT, Reader, WireType};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// How deep length-delimited values are walked as messages in turn.
const MAX_DESCENT: u32 = 8;

/// prost's wire type as ours.
fn wire_type(w: prost::encoding::WireType) -> WireType {
    use prost::encoding::WireType as P;
    match w {
        P::Varint => WireType::Varint,
        P::SixtyFourBit => WireType::Fixed64,
        P::LengthDelimited => WireType::Len,
        P::StartGroup => WireType::StartGroup,
        P::EndGroup => WireType::EndGroup,
        P::ThirtyTwoBit => WireType::Fixed32,
    }
}

/// `read_varint` and `read_key` at the start of `bytes` agree with prost's
/// `decode_varint` and `decode_key`.
fn check_varint_and_key(bytes: &[u8]) {
    let mut ours = Reader::new(bytes);
    let mut theirs = bytes;
    match (
        ours.read_varint(),
        prost::encoding::decode_varint(&mut theirs),
    ) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            let len = bytes.len() - theirs.len();
            assert_eq!(ours.offset(), len);
            assert_eq!(ours.remaining(), theirs);
            // A minimal encoding is the one prost writes; others are longer.
            let mut again = Vec::new();
            prost::encoding::encode_varint(a, &mut again);
            assert!(again.len() <= len);
            if again.len() == len {
                assert_eq!(&again[..], &bytes[..len]);
            }
        }
        (Err(e), Err(_)) => {
            assert_eq!(e.offset, 0);
            assert!(matches!(
                e.reason,
                BadMetaReason::TruncatedVarint | BadMetaReason::VarintOverflow
            ));
        }
        (ours, theirs) => panic!("read_varint {ours:?}, prost {theirs:?}"),
    }

    let mut ours = Reader::new(bytes);
    let mut theirs = bytes;
    match (ours.read_key(), prost::encoding::decode_key(&mut theirs)) {
        (Ok(key), Ok((number, w))) => {
            assert_eq!(
                (key.number, key.wire_type, key.offset),
                (number, wire_type(w), 0)
            );
            assert_eq!(ours.remaining(), theirs);
        }
        (Err(e), Err(_)) => assert_eq!(e.offset, 0),
        (ours, theirs) => panic!("read_key {ours:?}, prost {theirs:?}"),
    }
}

/// `err`, met reading the message `input[..end]`, names what is at its
/// offset.
fn check_offset(input: &[u8], end: usize, err: Malformed) {
    assert!(err.offset <= end, "{err:?} past the message end {end}");
    let at = &input[err.offset..end];
    match err.reason {
        BadMetaReason::TruncatedVarint | BadMetaReason::VarintOverflow => {
            assert!(
                prost::encoding::decode_varint(&mut &at[..]).is_err(),
                "{err:?}"
            );
        }
        BadMetaReason::KeyOverflow
        | BadMetaReason::FieldNumberZero
        | BadMetaReason::InvalidWireType => {
            assert!(
                prost::encoding::decode_varint(&mut &at[..]).is_ok(),
                "{err:?}"
            );
            assert!(
                prost::encoding::decode_key(&mut &at[..]).is_err(),
                "{err:?}"
            );
        }
        BadMetaReason::Truncated => {
            let mut rest = at;
            let len = prost::encoding::decode_varint(&mut rest).expect("a length prefix");
            assert!(len > rest.len() as u64, "{err:?}");
        }
        BadMetaReason::TruncatedFixed => {
            let mut rest = at;
            let (_, w) = prost::encoding::decode_key(&mut rest).expect("a key");
            let width = match wire_type(w) {
                WireType::Fixed64 => 8,
                WireType::Fixed32 => 4,
                other => panic!("{err:?} at a {other:?} key"),
            };
            assert!(rest.len() < width, "{err:?}");
        }
        BadMetaReason::UnexpectedEndGroup => {
            let (_, w) = prost::encoding::decode_key(&mut &at[..]).expect("a key");
            assert_eq!(wire_type(w), WireType::EndGroup, "{err:?}");
        }
        // At the first byte after a start-group tag: nothing simple to check.
        BadMetaReason::UnterminatedGroup | BadMetaReason::RecursionLimit => {}
        other => panic!("the reader reported a schema error: {other:?}"),
    }
}

/// Walks the message `reader` holds (ending at `end` in `input`) field by
/// field, skipping every value; each length-delimited value is walked as a
/// message too, `descent` levels down. Returns the first error.
fn walk(input: &[u8], mut reader: Reader<'_>, end: usize, descent: u32) -> Result<(), Malformed> {
    let start = reader.offset();
    assert_eq!(reader.remaining(), &input[start..end]);
    let result = (|| {
        while !reader.is_empty() {
            let key: Key = reader.read_key()?;
            assert!(key.offset >= start && key.offset < end);
            if key.wire_type == WireType::Len && descent > 0 {
                let before = reader.clone();
                let value = reader.read_len()?;
                // The sub-reader is the value, in input offsets, and the
                // reader moved past it; skipping would have done the same.
                let (value_start, value_len) = (value.offset(), value.remaining().len());
                assert_eq!(
                    value.remaining(),
                    &input[value_start..value_start + value_len]
                );
                assert_eq!(reader.offset(), value_start + value_len);
                let mut skipped = before;
                skipped
                    .skip_value(key, RECURSION_LIMIT)
                    .expect("read_len succeeded");
                assert_eq!(skipped.offset(), reader.offset());
                let _ = walk(input, value, value_start + value_len, descent - 1);
            } else {
                reader.skip_value(key, RECURSION_LIMIT)?;
            }
        }
        Ok(())
    })();
    assert!(reader.offset() <= end);
    if let Err(err) = result {
        check_offset(input, end, err);
    }
    // prost decodes the same bytes as a message of unknown fields: both
    // accept, or both reject (unless a recursion limit was reached).
    let prost = <() as Message>::decode(&input[start..end]);
    match (&result, &prost) {
        (Ok(()), Ok(())) | (Err(_), Err(_)) => {}
        (Err(e), _) if e.reason == BadMetaReason::RecursionLimit => {}
        (_, Err(e)) if e.to_string().contains("recursion limit reached") => {}
        _ => panic!(
            "protowire {result:?}, prost {prost:?} on {:02x?}",
            &input[start..end]
        ),
    }
    result
}

fuzz_target!(|data: &[u8]| {
    for at in 0..data.len().min(256) {
        check_varint_and_key(&data[at..]);
    }
    check_varint_and_key(&[]);
    let _ = walk(data, Reader::new(data), data.len(), MAX_DESCENT);
});
