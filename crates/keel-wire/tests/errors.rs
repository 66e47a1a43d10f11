//! Every `WireError` variant, produced by an input that causes it.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use keel_wire::baidu_std::{
    Frame, FrameHeader, HEADER_LEN, Limits, RpcMeta, decode_frame, encode_frame,
};
use keel_wire::{CompressType, WireError, compress, decompress};
use prost::Message;

/// A frame with the given meta bytes and rest of body, header computed.
fn frame_bytes(meta: &[u8], rest: &[u8]) -> Bytes {
    let header = FrameHeader {
        body_size: (meta.len() + rest.len()) as u32,
        meta_size: meta.len() as u32,
    };
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(meta);
    out.extend_from_slice(rest);
    out.into()
}

fn both(bytes: Bytes, limits: &Limits) -> (WireError, WireError) {
    let whole = Frame::decode(bytes.clone(), limits).expect_err("whole-frame decode fails");
    let mut buf = BytesMut::from(&bytes[..]);
    let streaming = decode_frame(&mut buf, limits).expect_err("streaming decode fails");
    (whole, streaming)
}

#[test]
fn bad_magic_says_when_the_peer_speaks_http() {
    for (input, http) in [
        (&b"GET /vars HTTP/1.1\r\n"[..], true),
        (b"POST /example.EchoService/Echo HTTP/1.1\r\n", true),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00", false),
        (b"PRPX\0\0\0\0\0\0\0\0", false),
    ] {
        let (whole, streaming) = both(Bytes::copy_from_slice(input), &Limits::default());
        for e in [whole, streaming] {
            let WireError::BadMagic { seen, http: h } = e else {
                panic!("{e:?}")
            };
            assert_eq!(&seen, &input[..4]);
            assert_eq!(h, http, "{}", input.escape_ascii());
            assert_eq!(e.code(), "bad_magic");
            assert_eq!(e.to_string().contains("sniff"), http, "{e}");
        }
    }
    // Reported after 4 bytes, before the header is complete.
    let mut buf = BytesMut::from(&b"HEAD"[..]);
    assert!(matches!(
        decode_frame(&mut buf, &Limits::default()),
        Err(WireError::BadMagic { .. })
    ));
}

#[test]
fn oversized() {
    let bytes = frame_bytes(&[], &[0; 100]);
    let (whole, streaming) = both(bytes, &Limits::new(99));
    for e in [whole, streaming] {
        assert!(
            matches!(
                e,
                WireError::Oversized {
                    size: 100,
                    limit: 99
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("Limits::max_body_size"), "{e}");
    }
}

#[test]
fn meta_larger_than_body() {
    let bytes = Bytes::from_static(b"PRPC\0\0\0\x02\0\0\0\x03ab");
    let (whole, streaming) = both(bytes, &Limits::default());
    for e in [whole, streaming] {
        assert!(
            matches!(
                e,
                WireError::MetaLargerThanBody {
                    meta_size: 3,
                    body_size: 2
                }
            ),
            "{e:?}"
        );
    }
    // Caught from the header alone, before the body arrives.
    let mut buf = BytesMut::from(&b"PRPC\0\0\0\x02\0\0\0\x03"[..]);
    assert!(matches!(
        decode_frame(&mut buf, &Limits::default()),
        Err(WireError::MetaLargerThanBody { .. })
    ));
}

#[test]
fn truncated() {
    let whole = common::echo_request().bytes;
    for len in [0, 3, 4, 11, 12, whole.len() - 1] {
        let e = Frame::decode(whole.slice(..len), &Limits::default()).unwrap_err();
        let needed = if len < HEADER_LEN {
            HEADER_LEN
        } else {
            whole.len()
        };
        assert!(
            matches!(e, WireError::Truncated { needed: n, available } if n == needed && available == len),
            "{len}: {e:?}"
        );
        // The streaming decoder just waits.
        let mut buf = BytesMut::from(&whole[..len]);
        assert!(
            decode_frame(&mut buf, &Limits::default())
                .unwrap()
                .is_none()
        );
    }
}

#[test]
fn trailing_bytes() {
    let mut bytes = common::echo_response().bytes.to_vec();
    bytes.extend_from_slice(b"PRPC");
    let e = Frame::decode(bytes.into(), &Limits::default()).unwrap_err();
    assert!(matches!(e, WireError::TrailingBytes { extra: 4 }), "{e:?}");
    assert!(e.to_string().contains("decode_frame"), "{e}");
}

#[test]
fn bad_meta() {
    // A length-delimited field 1 claiming 5 bytes where 1 follows, a bad
    // wire type, and a truncated varint.
    for meta in [&[0x0a, 0x05, 0x00][..], &[0x0f], &[0x20, 0xff]] {
        let (whole, streaming) = both(frame_bytes(meta, b"payload"), &Limits::default());
        for e in [whole, streaming] {
            assert!(matches!(e, WireError::BadMeta(_)), "{e:?}");
            assert!(
                e.to_string()
                    .starts_with("RpcMeta is not a valid protobuf message"),
                "{e}"
            );
        }
    }
}

#[test]
fn attachment_larger_than_payload() {
    for attachment_size in [8, -1, i32::MAX, i32::MIN] {
        let meta = RpcMeta {
            correlation_id: 77,
            attachment_size,
            ..RpcMeta::request("s", "m", 77)
        };
        let (whole, streaming) = both(
            frame_bytes(&meta.encode_to_vec(), b"1234567"),
            &Limits::default(),
        );
        for e in [whole, streaming] {
            assert!(
                matches!(
                    e,
                    WireError::AttachmentLargerThanPayload { attachment_size: a, available: 7, correlation_id: 77 }
                        if a == attachment_size
                ),
                "{e:?}"
            );
        }
    }
    // Exactly the rest of the body is fine: an empty payload.
    let meta = RpcMeta::request("s", "m", 1).with_attachment_size(7);
    let frame = Frame::decode(
        frame_bytes(&meta.encode_to_vec(), b"1234567"),
        &Limits::default(),
    )
    .unwrap();
    assert!(frame.payload.is_empty());
    assert_eq!(&frame.attachment[..], b"1234567");
}

#[test]
fn attachment_size_mismatch() {
    let mut dst = BytesMut::new();
    let meta = RpcMeta::request("s", "m", 1);
    let e = encode_frame(&mut dst, &meta, 0, |_| {}, b"abc").unwrap_err();
    assert!(
        matches!(
            e,
            WireError::AttachmentSizeMismatch {
                in_meta: 0,
                actual: 3
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("set meta.attachment_size"), "{e}");
    let e = encode_frame(&mut dst, &meta.with_attachment_size(-3), 0, |_| {}, b"abc").unwrap_err();
    assert!(
        matches!(
            e,
            WireError::AttachmentSizeMismatch {
                in_meta: -3,
                actual: 3
            }
        ),
        "{e:?}"
    );
    assert!(dst.is_empty());
}

#[test]
fn payload_length_mismatch() {
    let meta = RpcMeta::response(1, 0, "");
    let mut dst = BytesMut::from(&b"earlier frames"[..]);
    for (declared, write) in [(3, &b"four"[..]), (5, b"four"), (1, b"")] {
        let e = encode_frame(&mut dst, &meta, declared, |b| b.put_slice(write), &[]).unwrap_err();
        assert!(
            matches!(e, WireError::PayloadLengthMismatch { declared: d, written } if d == declared && written == write.len()),
            "{e:?}"
        );
        assert_eq!(
            &dst[..],
            b"earlier frames",
            "a failed encode leaves dst as it was"
        );
    }
    // A writer that removes bytes it did not write is caught too.
    let e = encode_frame(&mut dst, &meta, 0, |b| b.clear(), &[]).unwrap_err();
    assert!(
        matches!(
            e,
            WireError::PayloadLengthMismatch {
                declared: 0,
                written: 0
            }
        ),
        "{e:?}"
    );
}

#[test]
fn frame_too_large() {
    let mut dst = BytesMut::new();
    let meta = RpcMeta::request("s", "m", 1);
    let e = encode_frame(
        &mut dst,
        &meta,
        u32::MAX as usize,
        |_| panic!("not called"),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(e, WireError::FrameTooLarge { size } if size > u32::MAX as u64),
        "{e:?}"
    );
    let e = encode_frame(&mut dst, &meta, usize::MAX, |_| panic!("not called"), &[]).unwrap_err();
    assert!(matches!(e, WireError::FrameTooLarge { .. }), "{e:?}");
    assert!(
        dst.is_empty() && dst.capacity() < 1 << 20,
        "nothing reserved"
    );
}

#[test]
fn unsupported_compression() {
    let mut dst = BytesMut::new();
    for e in [
        compress(CompressType::Lz4, b"abc", &mut dst).unwrap_err(),
        decompress(CompressType::Lz4, b"abc", 100).unwrap_err(),
        CompressType::try_from(7).unwrap_err(),
        RpcMeta {
            compress_type: -1,
            ..RpcMeta::default()
        }
        .compression()
        .unwrap_err(),
    ] {
        assert!(
            matches!(e, WireError::UnsupportedCompression { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("Keel supports"), "{e}");
    }
}

#[test]
fn decompressed_too_large() {
    let mut packed = BytesMut::new();
    for kind in [
        CompressType::Snappy,
        CompressType::Gzip,
        CompressType::Zlib,
        CompressType::None,
    ] {
        packed.clear();
        compress(kind, &[7; 1000], &mut packed).unwrap();
        let e = decompress(kind, &packed, 999).unwrap_err();
        assert!(
            matches!(e, WireError::DecompressedTooLarge { kind: k, limit: 999 } if k == kind),
            "{e:?}"
        );
        assert!(e.to_string().contains("decompression bomb"), "{e}");
        assert_eq!(decompress(kind, &packed, 1000).unwrap().len(), 1000);
    }
}

#[test]
fn decompress_corrupt() {
    let mut packed = BytesMut::new();
    for kind in [CompressType::Snappy, CompressType::Gzip, CompressType::Zlib] {
        packed.clear();
        compress(kind, b"hello hello hello hello", &mut packed).unwrap();
        // Cut off the end: every format notices.
        let e = decompress(kind, &packed[..packed.len() - 2], 1 << 20).unwrap_err();
        assert!(
            matches!(e, WireError::Decompress { kind: k, .. } if k == kind),
            "{kind}: {e:?}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = decompress(kind, b"\xff\xfe\xfd\xfc\xfb\xfa", 1 << 20).unwrap_err();
        assert!(matches!(e, WireError::Decompress { .. }), "{kind}: {e:?}");
    }
}

#[test]
fn codes_are_distinct() {
    let mut codes = vec![
        WireError::BadMagic {
            seen: *b"XXXX",
            http: false,
        }
        .code(),
        WireError::Oversized { size: 0, limit: 0 }.code(),
        WireError::MetaLargerThanBody {
            meta_size: 0,
            body_size: 0,
        }
        .code(),
        WireError::Truncated {
            needed: 0,
            available: 0,
        }
        .code(),
        WireError::TrailingBytes { extra: 0 }.code(),
        WireError::AttachmentLargerThanPayload {
            attachment_size: 0,
            available: 0,
            correlation_id: 0,
        }
        .code(),
        WireError::AttachmentSizeMismatch {
            in_meta: 0,
            actual: 0,
        }
        .code(),
        WireError::PayloadLengthMismatch {
            declared: 0,
            written: 0,
        }
        .code(),
        WireError::FrameTooLarge { size: 0 }.code(),
        WireError::AttachmentTooLarge { size: 0 }.code(),
        WireError::UnsupportedCompression { compress_type: 0 }.code(),
        WireError::DecompressedTooLarge {
            kind: CompressType::Gzip,
            limit: 0,
        }
        .code(),
    ];
    let n = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), n);
}
