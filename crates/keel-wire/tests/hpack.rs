//! HPACK (RFC 7541): the Appendix C examples byte for byte, Huffman coding,
//! every decoding error, the dynamic table across blocks (eviction, size
//! updates, a too-large header list that must still update the table), and
//! random header lists round-tripped over many blocks.

use std::time::Instant;

use bytes::BytesMut;
use keel_wire::hpack::{Decoder, Encoder, HpackError, Indexing, decode_int, encode_int, huffman};
use proptest::collection::vec;
use proptest::prelude::*;

type Field = (Vec<u8>, Vec<u8>);

/// Bytes from hex, ignoring spaces and newlines (the RFC's dump layout).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn fields(list: &[(&str, &str)]) -> Vec<Field> {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Decodes a block with no list limit, collecting its fields.
fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<Field>, HpackError> {
    let mut out = Vec::new();
    decoder.decode(block, usize::MAX, |n, v| out.push((n.to_vec(), v.to_vec())))?;
    Ok(out)
}

fn decoder_table(decoder: &Decoder) -> Vec<Field> {
    decoder
        .dynamic_table()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

fn encoder_table(encoder: &Encoder) -> Vec<Field> {
    encoder
        .dynamic_table()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

/// Encodes one block, every field with the same `indexing`.
fn encode(encoder: &mut Encoder, list: &[Field], indexing: Indexing) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encoder.encode(
        list.iter().map(|(n, v)| (&n[..], &v[..], indexing)),
        &mut dst,
    );
    dst.to_vec()
}

fn decode_err(decoder: &mut Decoder, block: &[u8]) -> HpackError {
    decode(decoder, block).expect_err("the block is malformed")
}

// ---------------------------------------------------------------------------
// RFC 7541 Appendix C
// ---------------------------------------------------------------------------

#[test]
fn c1_integer_representation() {
    let cases: &[(usize, u8, &[u8])] = &[
        // C.1.1: 10 on a 5-bit prefix.
        (10, 5, &[0x0a]),
        // C.1.2: 1337 on a 5-bit prefix: 31, then 1306 in two 7-bit groups.
        (1337, 5, &[0x1f, 0x9a, 0x0a]),
        // C.1.3: 42 on a whole byte.
        (42, 8, &[0x2a]),
        // Edges: the prefix's maximum itself takes a zero continuation.
        (31, 5, &[0x1f, 0x00]),
        (30, 5, &[0x1e]),
        (u32::MAX as usize, 1, &[0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f]),
    ];
    for &(value, prefix, bytes) in cases {
        let mut dst = BytesMut::new();
        encode_int(value, prefix, 0, &mut dst);
        assert_eq!(&dst[..], bytes, "encoding {value} on {prefix} bits");
        let mut with_tail = bytes.to_vec();
        with_tail.push(0xaa);
        assert_eq!(
            decode_int(&with_tail, prefix),
            Ok((value, bytes.len())),
            "decoding {value} on {prefix} bits"
        );
    }
    // The bits above the prefix carry the representation's flags, and
    // decoding ignores them.
    let mut dst = BytesMut::new();
    encode_int(10, 5, 0xe0, &mut dst);
    assert_eq!(&dst[..], [0xea]);
    assert_eq!(decode_int(&[0xea], 5), Ok((10, 1)));
}

#[test]
fn c2_field_representations() {
    // C.2.1: literal with incremental indexing, new name.
    let mut decoder = Decoder::new(4096);
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    let expected = fields(&[("custom-key", "custom-header")]);
    assert_eq!(decode(&mut decoder, &block).unwrap(), expected);
    assert_eq!(decoder_table(&decoder), expected);
    assert_eq!(decoder.dynamic_table_size(), 55);

    // C.2.2: literal without indexing, indexed name.
    let mut decoder = Decoder::new(4096);
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(
        decode(&mut decoder, &block).unwrap(),
        fields(&[(":path", "/sample/path")])
    );
    assert_eq!(decoder.dynamic_table().count(), 0);

    // C.2.3: literal never indexed, new name.
    let mut decoder = Decoder::new(4096);
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    assert_eq!(
        decode(&mut decoder, &block).unwrap(),
        fields(&[("password", "secret")])
    );
    assert_eq!(decoder.dynamic_table().count(), 0);

    // C.2.4: indexed field.
    let mut decoder = Decoder::new(4096);
    assert_eq!(
        decode(&mut decoder, &[0x82]).unwrap(),
        fields(&[(":method", "GET")])
    );
    assert_eq!(decoder.dynamic_table().count(), 0);

    // The encoder picks the same representations (its strings may be
    // Huffman-coded where the RFC's are not, so compare the leading byte
    // and round-trip the rest).
    let cases: &[(&str, &str, Indexing, u8, usize)] = &[
        ("custom-key", "custom-header", Indexing::Yes, 0x40, 1),
        (":path", "/sample/path", Indexing::No, 0x04, 0),
        ("password", "secret", Indexing::Never, 0x10, 0),
        (":method", "GET", Indexing::Yes, 0x82, 0),
    ];
    for &(name, value, indexing, first_byte, table_len) in cases {
        let mut encoder = Encoder::new();
        let list = fields(&[(name, value)]);
        let block = encode(&mut encoder, &list, indexing);
        assert_eq!(block[0], first_byte, "{name}: {indexing:?}");
        assert_eq!(encoder.dynamic_table().count(), table_len);
        let mut decoder = Decoder::new(4096);
        assert_eq!(decode(&mut decoder, &block).unwrap(), list);
        assert_eq!(decoder_table(&decoder), encoder_table(&encoder));
    }
    let mut encoder = Encoder::new();
    assert_eq!(
        encode(&mut encoder, &fields(&[(":method", "GET")]), Indexing::Yes),
        [0x82]
    );
}

/// The three requests of C.3 and C.4, and the dynamic table after each.
fn requests() -> [(Vec<Field>, Vec<Field>, usize); 3] {
    [
        (
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
            fields(&[(":authority", "www.example.com")]),
            57,
        ),
        (
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
            fields(&[
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ]),
            110,
        ),
        (
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
            fields(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ]),
            164,
        ),
    ]
}

/// The three responses of C.5 and C.6 (256-byte table), and the dynamic
/// table after each.
fn responses() -> [(Vec<Field>, Vec<Field>, usize); 3] {
    let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    [
        (
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ]),
            fields(&[
                ("location", "https://www.example.com"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("cache-control", "private"),
                (":status", "302"),
            ]),
            222,
        ),
        (
            fields(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ]),
            // ":status: 302" was evicted to make room.
            fields(&[
                (":status", "307"),
                ("location", "https://www.example.com"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("cache-control", "private"),
            ]),
            222,
        ),
        (
            fields(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                ("set-cookie", cookie),
            ]),
            fields(&[
                ("set-cookie", cookie),
                ("content-encoding", "gzip"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ]),
            215,
        ),
    ]
}

/// Decodes `blocks` in order on one decoder, checking each block's fields
/// and the table after it.
fn check_decoding(
    mut decoder: Decoder,
    blocks: &[&str],
    expected: &[(Vec<Field>, Vec<Field>, usize)],
) {
    for (i, (block, (list, table, size))) in blocks.iter().zip(expected).enumerate() {
        assert_eq!(
            &decode(&mut decoder, &hex(block)).unwrap(),
            list,
            "block {i}"
        );
        assert_eq!(&decoder_table(&decoder), table, "table after block {i}");
        assert_eq!(
            decoder.dynamic_table_size(),
            *size,
            "table size after block {i}"
        );
    }
}

/// Encodes the lists in order on one encoder (all fields Indexing::Yes),
/// decodes them on one decoder, and checks the two tables agree with the
/// RFC's after each block. Returns the blocks.
fn round_trip(
    mut encoder: Encoder,
    mut decoder: Decoder,
    expected: &[(Vec<Field>, Vec<Field>, usize)],
) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    for (i, (list, table, size)) in expected.iter().enumerate() {
        let block = encode(&mut encoder, list, Indexing::Yes);
        assert_eq!(&decode(&mut decoder, &block).unwrap(), list, "block {i}");
        assert_eq!(&encoder_table(&encoder), table, "encoder table after {i}");
        assert_eq!(&decoder_table(&decoder), table, "decoder table after {i}");
        assert_eq!(encoder.dynamic_table_size(), *size);
        blocks.push(block);
    }
    blocks
}

#[test]
fn c3_requests_without_huffman() {
    let blocks = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    check_decoding(Decoder::new(4096), &blocks, &requests());
    // The encoder Huffman-codes these strings (shorter), so its bytes are
    // C.4's, checked there; here, a round trip.
    round_trip(Encoder::new(), Decoder::new(4096), &requests());
}

#[test]
fn c4_requests_with_huffman() {
    let blocks = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    check_decoding(Decoder::new(4096), &blocks, &requests());
    let encoded = round_trip(Encoder::new(), Decoder::new(4096), &requests());
    for (i, (ours, theirs)) in encoded.iter().zip(blocks).enumerate() {
        assert_eq!(ours, &hex(theirs), "C.4.{}", i + 1);
    }
}

#[test]
fn c5_responses_without_huffman() {
    let blocks = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ];
    check_decoding(Decoder::new(256), &blocks, &responses());
    let mut encoder = Encoder::new();
    encoder.set_max_table_size(256);
    round_trip(encoder, Decoder::new(256), &responses());
}

#[test]
fn c6_responses_with_huffman() {
    let blocks = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];
    check_decoding(Decoder::new(256), &blocks, &responses());

    // The RFC assumes both sides start at 256 bytes; our encoder starts at
    // HTTP/2's 4096 and learns 256 from the peer's SETTINGS, so its first
    // block opens with the size update (001 11111, then 256 - 31 = 225 as
    // e1 01), then is the RFC's byte for byte.
    let mut encoder = Encoder::new();
    encoder.set_max_table_size(256);
    let encoded = round_trip(encoder, Decoder::new(256), &responses());
    let mut first = hex("3fe101");
    first.extend(hex(blocks[0]));
    assert_eq!(encoded[0], first, "C.6.1");
    // C.6.2 Huffman-codes "307" in 3 bytes, no shorter than the raw 3, so
    // we send it raw: the block is C.5.2's.
    assert_eq!(encoded[1], hex("4803 3330 37c1 c0bf"), "C.6.2");
    assert_eq!(encoded[2], hex(blocks[2]), "C.6.3");
}

// ---------------------------------------------------------------------------
// Huffman
// ---------------------------------------------------------------------------

fn huffman_round_trip(s: &[u8]) -> Vec<u8> {
    let mut coded = BytesMut::new();
    huffman::encode(s, &mut coded);
    assert_eq!(coded.len(), huffman::encoded_len(s));
    let mut out = Vec::new();
    huffman::decode(&coded, &mut out).expect("our own coding decodes");
    out
}

#[test]
fn huffman_every_byte_round_trips() {
    for b in 0..=255u8 {
        assert_eq!(huffman_round_trip(&[b]), [b], "byte {b}");
        assert_eq!(huffman_round_trip(&[b; 7]), [b; 7], "byte {b} x7");
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(huffman_round_trip(&all), all);
    assert_eq!(huffman_round_trip(b""), b"");
    // RFC 7541 C.4.1's coding of www.example.com.
    let mut coded = BytesMut::new();
    huffman::encode(b"www.example.com", &mut coded);
    assert_eq!(&coded[..], hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
}

proptest! {
    #[test]
    fn huffman_random_strings_round_trip(s in vec(any::<u8>(), 0..300)) {
        prop_assert_eq!(huffman_round_trip(&s), s);
    }

    #[test]
    fn huffman_decoding_any_bytes_never_panics(s in vec(any::<u8>(), 0..64)) {
        let mut out = Vec::new();
        if huffman::decode(&s, &mut out).is_ok() {
            // What decodes re-encodes to the same bytes: the code is a
            // bijection once padding is fixed to ones.
            let mut coded = BytesMut::new();
            huffman::encode(&out, &mut coded);
            prop_assert_eq!(&coded[..], &s[..]);
        }
    }
}

#[test]
fn huffman_rejects_bad_padding_and_eos() {
    let bad = |s: &[u8]| {
        let mut out = Vec::new();
        match huffman::decode(s, &mut out) {
            Err(HpackError::BadHuffman(why)) => why,
            other => panic!("{s:02x?} decoded: {other:?} {out:?}"),
        }
    };
    // 'a' is 00011, then three bits of padding.
    let mut out = Vec::new();
    huffman::decode(&[0b0001_1111], &mut out).unwrap();
    assert_eq!(out, b"a");
    // ... not all ones: 000 is the start of '0' (00000), cut short.
    assert!(bad(&[0b0001_1000]).contains("not all one-bits"));
    assert!(bad(&[0b0001_1110]).contains("not all one-bits"));
    // ... eleven ones: a whole byte of padding is too much.
    assert!(bad(&[0b0001_1111, 0xff]).contains("longer than 7 bits"));
    assert!(bad(&[0xff]).contains("longer than 7 bits"));
    // EOS (thirty ones) encoded in the string, then two bits of padding.
    assert!(bad(&[0xff, 0xff, 0xff, 0xff]).contains("EOS"));
    // ... after a symbol: 'a' 00011, then EOS's 30 ones, then 5 ones.
    assert!(bad(&[0x1f, 0xff, 0xff, 0xff, 0xff]).contains("EOS"));

    // In a header block the same strings are compression errors.
    let mut decoder = Decoder::new(4096);
    let err = decode_err(&mut decoder, &[0x00, 0x81, 0xff, 0x00]);
    assert!(matches!(err, HpackError::BadHuffman(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("Huffman") && message.contains("padding is longer than 7 bits"),
        "{message}"
    );
    assert!(err.is_connection_error());
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn truncated_blocks_are_errors() {
    let cases: &[(&[u8], &str)] = &[
        // Literal, name by index 1, the value's length missing.
        (&[0x41], "a string literal is missing"),
        // Literal whose value says 5 bytes but has 1.
        (&[0x41, 0x05, b'a'], "shorter than its length says"),
        // Literal with a new name, cut inside the name.
        (&[0x40, 0x03, b'a'], "shorter than its length says"),
        // Indexed field whose index needs continuation bytes.
        (&[0xff], "continuation bytes"),
        (&[0xff, 0x80], "continuation bytes"),
        // A string length needing continuation bytes.
        (&[0x41, 0x7f], "continuation bytes"),
    ];
    for &(block, detail) in cases {
        let err = decode_err(&mut Decoder::new(4096), block);
        assert!(
            matches!(err, HpackError::Truncated(_)),
            "{block:02x?}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("header block truncated inside") && message.contains(detail),
            "{block:02x?}: {message}"
        );
    }
}

#[test]
fn oversized_integers_are_errors() {
    // Six continuation bytes, even if they would only add zeros.
    let err = decode_err(
        &mut Decoder::new(4096),
        &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
    );
    assert_eq!(err, HpackError::IntegerOverflow);
    // Five continuation bytes, but the value passes 2^32 - 1.
    let err = decode_err(
        &mut Decoder::new(4096),
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    );
    assert_eq!(err, HpackError::IntegerOverflow);
    assert!(
        err.to_string()
            .contains("integer in header block is too large")
    );
    // The largest accepted: 2^32 - 1 is then out of range as an index.
    let (max, _) = decode_int(&[0x7f, 0x80, 0xff, 0xff, 0xff, 0x0f], 7).unwrap();
    assert_eq!(max, u32::MAX as usize);
    assert_eq!(
        decode_int(&[0x7f, 0x81, 0xff, 0xff, 0xff, 0x0f], 7),
        Err(HpackError::IntegerOverflow)
    );
}

#[test]
fn bad_indexes_are_errors() {
    let err = decode_err(&mut Decoder::new(4096), &[0x80]);
    assert_eq!(err, HpackError::IndexZero);
    assert!(err.to_string().contains("index 0"));

    // 62 is the first dynamic index; the table is empty.
    let err = decode_err(&mut Decoder::new(4096), &[0x80 | 62]);
    assert_eq!(
        err,
        HpackError::IndexOutOfRange {
            index: 62,
            dynamic_len: 0
        }
    );
    assert!(
        err.to_string()
            .contains("index 62, but the tables have only 61 entries (61 static, 0 dynamic)"),
        "{err}"
    );

    // As a literal's name index, after one entry was added: 63 is past it.
    let mut decoder = Decoder::new(4096);
    decode(
        &mut decoder,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    let err = decode_err(&mut decoder, &[0x7f, 0x00, 0x01, b'v']);
    assert_eq!(
        err,
        HpackError::IndexOutOfRange {
            index: 63,
            dynamic_len: 1
        }
    );
    assert!(err.to_string().contains("62 entries"));
    // Without indexing, never indexed: the same.
    let err = decode_err(&mut Decoder::new(4096), &[0x0f, 0x2f, 0x00]);
    assert_eq!(
        err,
        HpackError::IndexOutOfRange {
            index: 62,
            dynamic_len: 0
        }
    );
    // Index 0 in a literal is not an index but "a new name follows".
    assert_eq!(
        decode(&mut Decoder::new(4096), &[0x10, 0x00, 0x00]).unwrap(),
        fields(&[("", "")])
    );
}

#[test]
fn table_size_updates_are_checked() {
    // 4097 = 31 + 0x62 + (0x1f << 7): one more than advertised.
    let err = decode_err(&mut Decoder::new(4096), &[0x3f, 0xe2, 0x1f]);
    assert_eq!(
        err,
        HpackError::TableSizeUpdateTooLarge {
            size: 4097,
            max: 4096
        }
    );
    assert!(
        err.to_string()
            .contains("4097 bytes exceeds the 4096 bytes"),
        "{err}"
    );

    // After a field.
    let err = decode_err(&mut Decoder::new(4096), &[0x82, 0x20]);
    assert_eq!(err, HpackError::TableSizeUpdateNotFirst);
    assert!(
        err.to_string()
            .contains("only at the start of a header block")
    );

    // Two at the start are fine: to 0 (emptying the table), then 4096.
    let mut decoder = Decoder::new(4096);
    decode(
        &mut decoder,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(decoder.dynamic_table().count(), 1);
    assert_eq!(
        decode(&mut decoder, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).unwrap(),
        fields(&[(":method", "GET")])
    );
    assert_eq!(decoder.dynamic_table().count(), 0);
    assert_eq!(decoder.dynamic_table_max(), 4096);

    // Lowering our setting below the table's size requires an update.
    let mut decoder = Decoder::new(4096);
    decoder.set_max_table_size(100);
    let err = decode_err(&mut decoder, &[0x82]);
    assert_eq!(
        err,
        HpackError::TableSizeUpdateMissing {
            max: 100,
            current: 4096
        }
    );
    assert!(err.to_string().contains("lowered to 100 bytes"), "{err}");
    let err = decode_err(&mut decoder, &[]);
    assert!(matches!(err, HpackError::TableSizeUpdateMissing { .. }));
    // 101 is still too large; 100 (31 + 69) is right.
    let err = decode_err(&mut decoder, &[0x3f, 0x46, 0x82]);
    assert_eq!(
        err,
        HpackError::TableSizeUpdateTooLarge {
            size: 101,
            max: 100
        }
    );
    decode(&mut decoder, &[0x3f, 0x45, 0x82]).unwrap();
    assert_eq!(decoder.dynamic_table_max(), 100);
    decode(&mut decoder, &[0x82]).unwrap();
    // Raising it requires nothing.
    decoder.set_max_table_size(4096);
    decode(&mut decoder, &[0x82]).unwrap();
}

#[test]
fn too_large_lists_are_decoded_to_the_end() {
    let mut encoder = Encoder::new();
    let big = "a".repeat(100);
    let list = fields(&[("x-small", "b"), ("x-big", &big), ("x-after", "c")]);
    let first = encode(&mut encoder, &list, Indexing::Yes);

    // 7 + 1 + 32 = 40 fits a limit of 50; x-big takes the list past it.
    let mut decoder = Decoder::new(4096);
    let mut seen = Vec::new();
    let err = decoder
        .decode(&first, 50, |n, v| seen.push((n.to_vec(), v.to_vec())))
        .unwrap_err();
    let size = 40 + (5 + 100 + 32) + (7 + 1 + 32);
    assert_eq!(err, HpackError::TooLarge { size, limit: 50 });
    assert!(!err.is_connection_error());
    assert!(
        err.to_string().contains(&format!(
            "header list of {size} bytes exceeds the limit of 50 bytes"
        )),
        "{err}"
    );
    // Fields are passed on only while the list is within the limit.
    assert_eq!(seen, list[..1]);
    // But all three went into the table.
    assert_eq!(decoder_table(&decoder), encoder_table(&encoder));
    assert_eq!(decoder.dynamic_table().count(), 3);

    // So the next block, which refers to them by index, decodes.
    let second = encode(&mut encoder, &list, Indexing::Yes);
    assert_eq!(second, [0x80 | 64, 0x80 | 63, 0x80 | 62]);
    assert_eq!(decode(&mut decoder, &second).unwrap(), list);
}

// ---------------------------------------------------------------------------
// Encoder behaviour
// ---------------------------------------------------------------------------

fn grpc_request() -> Vec<Field> {
    fields(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/echo.Echo/Echo"),
        (":authority", "127.0.0.1:8000"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "1S"),
        ("user-agent", "grpc-go/1.60"),
    ])
}

#[test]
fn repeated_grpc_fields_cost_one_byte() {
    let response = fields(&[
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-accept-encoding", "identity,deflate,gzip"),
    ]);
    let trailers = fields(&[("grpc-status", "0")]);
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::new(4096);
    let first = encode(&mut encoder, &response, Indexing::Yes);
    assert!(first.len() > 20);
    assert_eq!(decode(&mut decoder, &first).unwrap(), response);
    assert_eq!(
        decode(
            &mut decoder,
            &encode(&mut encoder, &trailers, Indexing::Yes)
        )
        .unwrap(),
        trailers
    );
    for _ in 0..3 {
        let again = encode(&mut encoder, &response, Indexing::Yes);
        assert_eq!(again.len(), 3, "{again:02x?}");
        assert_eq!(decode(&mut decoder, &again).unwrap(), response);
        let again = encode(&mut encoder, &trailers, Indexing::Yes);
        assert_eq!(again.len(), 1);
        assert_eq!(decode(&mut decoder, &again).unwrap(), trailers);
    }
}

#[test]
fn indexing_no_and_never_stay_out_of_the_table() {
    let mut encoder = Encoder::new();
    let list = fields(&[("authorization", "Bearer secret"), ("x-request-id", "42")]);
    let mut dst = BytesMut::new();
    encoder.encode(
        [
            (&list[0].0[..], &list[0].1[..], Indexing::Never),
            (&list[1].0[..], &list[1].1[..], Indexing::No),
        ],
        &mut dst,
    );
    assert_eq!(encoder.dynamic_table().count(), 0);
    // authorization is static index 23: never indexed, 4-bit prefix 15 + 8.
    assert_eq!(&dst[..2], [0x1f, 0x08]);
    assert_eq!(decode(&mut Decoder::new(4096), &dst).unwrap(), list);

    // A sensitive field is a never-indexed literal even when the same field
    // is in the table.
    let mut dst = BytesMut::new();
    encoder.encode([(&b"x-token"[..], &b"t"[..], Indexing::Yes)], &mut dst);
    let mut dst = BytesMut::new();
    encoder.encode([(&b"x-token"[..], &b"t"[..], Indexing::Never)], &mut dst);
    assert_eq!(dst[0], 0x1f, "never indexed, name index 62 = 15 + 47");
    assert_eq!(dst[1], 47);
}

#[test]
fn encoder_signals_table_size_changes() {
    let list = fields(&[("x-a", "1")]);
    // Capped at 4096: the peer's 8192 changes nothing.
    let mut encoder = Encoder::new();
    encoder.set_max_table_size(8192);
    assert_eq!(encode(&mut encoder, &list, Indexing::Yes)[0], 0x40);

    // Down to 0: the update, then a literal the table cannot take.
    let mut encoder = Encoder::new();
    encoder.set_max_table_size(0);
    let block = encode(&mut encoder, &list, Indexing::Yes);
    assert_eq!(block[..2], [0x20, 0x00]);
    assert_eq!(encoder.dynamic_table().count(), 0);
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &block).unwrap(), list);
    assert_eq!(d.dynamic_table_max(), 0);

    // Down to 100 and back up between two blocks: both are signaled, and
    // the table evicted at 100 stays in step with the peer's.
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::new(4096);
    let big = fields(&[("x-big", &"v".repeat(80))]);
    let block = encode(&mut encoder, &big, Indexing::Yes);
    assert_eq!(decode(&mut decoder, &block).unwrap(), big);
    encoder.set_max_table_size(100);
    encoder.set_max_table_size(4096);
    let block = encode(&mut encoder, &list, Indexing::Yes);
    // 100 = 31 + 69; 4096 = 31 + 0x61 + (0x1f << 7).
    assert_eq!(block[..5], [0x3f, 0x45, 0x3f, 0xe1, 0x1f]);
    assert_eq!(decode(&mut decoder, &block).unwrap(), list);
    assert_eq!(decoder_table(&decoder), encoder_table(&encoder));
    // No change since: no update.
    let block = encode(&mut encoder, &list, Indexing::Yes);
    assert_eq!(block, [0x80 | 62]);
}

#[test]
fn a_literal_may_name_the_entry_it_evicts() {
    // A 100-byte table holds one ("abcd", 50 bytes) entry (86 bytes). The
    // second field names it by index and evicts it on insertion.
    let mut encoder = Encoder::new();
    encoder.set_max_table_size(100);
    let mut decoder = Decoder::new(100);
    let first = fields(&[("abcd", &"x".repeat(50))]);
    let second = fields(&[("abcd", &"y".repeat(50))]);
    let block = encode(&mut encoder, &first, Indexing::Yes);
    assert_eq!(decode(&mut decoder, &block).unwrap(), first);
    let block = encode(&mut encoder, &second, Indexing::Yes);
    assert_eq!(block[0], 0x40 | 62, "name by dynamic index");
    assert_eq!(decode(&mut decoder, &block).unwrap(), second);
    assert_eq!(decoder_table(&decoder), second);
}

#[test]
fn retained_and_shrink() {
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::new(4096);
    assert_eq!(decoder.retained(), 0);
    assert_eq!(encoder.retained(), 0);
    let block = encode(&mut encoder, &grpc_request(), Indexing::Yes);
    decode(&mut decoder, &block).unwrap();
    let table_bytes: usize = decoder
        .dynamic_table()
        .map(|(n, v)| n.len() + v.len())
        .sum();
    assert!(decoder.retained() >= table_bytes, "{}", decoder.retained());
    // Bounded by twice the table's maximum plus the entry records.
    assert!(
        decoder.retained() < 2 * 4096 + 4096,
        "{}",
        decoder.retained()
    );
    assert!(encoder.retained() >= table_bytes);
    let before = decoder.retained();
    decoder.shrink();
    assert!(decoder.retained() < before);
    assert!(decoder.retained() >= table_bytes);
    // Still decodes, the table intact.
    let block = encode(&mut encoder, &grpc_request(), Indexing::Yes);
    assert_eq!(decode(&mut decoder, &block).unwrap(), grpc_request());
}

// ---------------------------------------------------------------------------
// Random lists over many blocks
// ---------------------------------------------------------------------------

fn indexing() -> impl Strategy<Value = Indexing> {
    prop_oneof![
        3 => Just(Indexing::Yes),
        1 => Just(Indexing::No),
        1 => Just(Indexing::Never),
    ]
}

/// Names and values: often from a small pool (so the tables get hits and
/// name matches), otherwise arbitrary bytes.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            &b":path"[..],
            b"content-type",
            b"grpc-status",
            b"x-custom",
            b"",
            b":status",
        ])
        .prop_map(<[u8]>::to_vec),
        vec(any::<u8>(), 0..24),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![&b"0"[..], b"200", b"application/grpc", b"", b"/"])
            .prop_map(<[u8]>::to_vec),
        vec(any::<u8>(), 0..80),
    ]
}

/// A block: maybe a table size change before it, then its fields.
type Block = (Option<usize>, Vec<(Vec<u8>, Vec<u8>, Indexing)>);

fn blocks() -> impl Strategy<Value = (usize, Vec<Block>)> {
    (0..=5000usize).prop_flat_map(|decoder_max| {
        let block = (
            prop::option::weighted(0.2, 0..=decoder_max),
            vec((name(), value(), indexing()), 0..12),
        );
        (Just(decoder_max), vec(block, 1..12))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_lists_round_trip_over_many_blocks((decoder_max, blocks) in blocks()) {
        let mut encoder = Encoder::new();
        // The peer's SETTINGS, before the first block.
        encoder.set_max_table_size(decoder_max);
        let mut decoder = Decoder::new(decoder_max);
        for (change, list) in &blocks {
            if let Some(size) = change {
                encoder.set_max_table_size(*size);
            }
            let mut dst = BytesMut::new();
            encoder.encode(list.iter().map(|(n, v, i)| (&n[..], &v[..], *i)), &mut dst);
            let decoded = decode(&mut decoder, &dst).unwrap();
            let expected: Vec<Field> = list.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
            prop_assert_eq!(decoded, expected);
            // The decoder's table holds at least the encoder's entries, in
            // the same order (it may keep more when our encoder uses less
            // than the decoder allows and so never had to signal it).
            let ours = encoder_table(&encoder);
            let theirs = decoder_table(&decoder);
            prop_assert!(theirs.starts_with(&ours));
            if decoder.dynamic_table_max() == encoder.dynamic_table_max() {
                prop_assert_eq!(theirs, ours);
            }
            prop_assert!(encoder.dynamic_table_size() <= encoder.dynamic_table_max());
            prop_assert!(decoder.dynamic_table_size() <= decoder.dynamic_table_max());
        }
    }

    #[test]
    fn decoding_any_bytes_never_panics(
        blocks in vec(vec(any::<u8>(), 0..64), 1..6),
        limit in 0..2000usize,
    ) {
        let mut decoder = Decoder::new(256);
        for block in &blocks {
            match decoder.decode(block, limit, |_, _| {}) {
                Ok(()) => {}
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    if e.is_connection_error() {
                        break;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Speed (printed, not asserted)
// ---------------------------------------------------------------------------

/// Run with `cargo test --release -p keel-wire --test hpack decode_time --
/// --nocapture` for a figure; debug builds run fewer iterations.
#[test]
fn decode_time_per_request_block() {
    let iters: u32 = if cfg!(debug_assertions) {
        10_000
    } else {
        1_000_000
    };
    let mut encoder = Encoder::new();
    let list = grpc_request();
    // The first request on a connection: literals, Huffman-coded, indexed.
    let first = encode(&mut encoder, &list, Indexing::Yes);
    // Every later one: indexes only.
    let later = encode(&mut encoder, &list, Indexing::Yes);
    for (label, block) in [("first (literals)", &first), ("later (indexed)", &later)] {
        let mut decoder = Decoder::new(4096);
        decode(&mut decoder, &first).unwrap();
        let mut bytes = 0usize;
        let start = Instant::now();
        for _ in 0..iters {
            decoder
                .decode(std::hint::black_box(block), 16 << 10, |n, v| {
                    bytes += n.len() + v.len();
                })
                .unwrap();
        }
        let elapsed = start.elapsed();
        std::hint::black_box(bytes);
        println!(
            "hpack decode, {label} gRPC request block of {} bytes, 8 fields: {:.1} ns/block over {iters} blocks",
            block.len(),
            elapsed.as_nanos() as f64 / f64::from(iters),
        );
    }
}
