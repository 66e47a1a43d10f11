//! The zero-allocation path (`RawFrame`, `MetaView`, `encode_request`,
//! `encode_response`) against the prost path and the brpc captures.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Capture, assert_view_eq};
use keel_wire::baidu_std::{
    Frame, FrameHeader, HEADER_LEN, Limits, MetaView, RawFrame, RequestHeader, RequestView,
    ResponseView, RpcMeta, decode_frame, decode_raw_frame, encode_frame, encode_request,
    encode_response, errno,
};
use keel_wire::{BadMetaReason, WireError};
use prost::Message;

fn frame(c: &Capture) -> Frame {
    Frame::decode(c.bytes.clone(), &Limits::default()).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

fn raw(c: &Capture) -> RawFrame {
    RawFrame::decode(c.bytes.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

#[test]
fn every_capture_parses_as_prost_decodes_it() {
    for c in common::all() {
        let expected = frame(&c);
        let raw = raw(&c);
        assert_eq!(raw.body_len(), c.claimed.body_size, "{}", c.name);
        assert_eq!(raw.meta_bytes().len(), c.claimed.meta_size, "{}", c.name);
        assert_eq!(raw.header(), FrameHeader::parse(&c.bytes).unwrap());
        let view = raw.meta().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_view_eq(&view, &expected.meta, &c.name);

        let (payload, attachment) = raw.split(&view).unwrap();
        assert_eq!(payload, expected.payload, "{}", c.name);
        assert_eq!(attachment, expected.attachment, "{}", c.name);
        // Slices of the capture, not copies; the strings too.
        let range = c.bytes.as_ptr_range();
        assert!(payload.is_empty() || range.contains(&payload.as_ptr()));
        assert!(attachment.is_empty() || range.contains(&attachment.as_ptr()));
        if let Some(r) = &view.request {
            assert!(range.contains(&r.service_name.as_ptr()), "{}", c.name);
        }
        assert_eq!(raw.into_frame().unwrap(), expected, "{}", c.name);
    }
}

#[test]
fn brpc_echo_request_view() {
    let c = common::echo_request();
    let raw = raw(&c);
    let view = raw.meta().unwrap();
    assert_eq!(
        view,
        MetaView {
            request: Some(RequestView {
                service_name: "example.EchoService".into(),
                method_name: "Echo".into(),
                ..RequestView::default()
            }),
            correlation_id: 1_099_511_627_778,
            ..MetaView::default()
        }
    );
    let c = common::echo_response_attachment();
    let raw = RawFrame::decode(c.bytes, &Limits::default()).unwrap();
    let view = raw.meta().unwrap();
    assert_eq!(view.response, Some(ResponseView::default()));
    assert_eq!(
        (view.correlation_id, view.attachment_size),
        (4_294_967_298, 3)
    );
}

/// Feeds `input` in pieces of `step` bytes to both streaming decoders and
/// checks that they cut the same frames after the same byte.
fn feed_both(input: &[u8], step: usize) -> usize {
    let limits = Limits::default();
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    let mut frames = 0;
    for piece in input.chunks(step) {
        a.extend_from_slice(piece);
        b.extend_from_slice(piece);
        loop {
            let prost = decode_frame(&mut a, &limits).unwrap();
            let raw = decode_raw_frame(&mut b, &limits).unwrap();
            assert_eq!(a, b, "both leave the same bytes");
            match (prost, raw) {
                (None, None) => break,
                (Some(frame), Some(raw)) => {
                    assert_view_eq(&raw.meta().unwrap(), &frame.meta, "streamed");
                    let (payload, attachment) = raw.split(&raw.meta().unwrap()).unwrap();
                    assert_eq!(
                        (payload, attachment),
                        (frame.payload.clone(), frame.attachment.clone())
                    );
                    assert_eq!(raw.into_frame().unwrap(), frame);
                    frames += 1;
                }
                (prost, raw) => panic!("decoders disagree: {prost:?} vs {raw:?}"),
            }
        }
    }
    assert!(b.is_empty(), "bytes left over");
    frames
}

#[test]
fn raw_decoder_cuts_the_same_frames_byte_by_byte() {
    for c in common::all() {
        assert_eq!(feed_both(&c.bytes, 1), 1, "{}", c.name);
    }
}

#[test]
fn raw_decoder_cuts_the_same_pipelined_frames() {
    let all = common::all();
    let wire: Vec<u8> = all.iter().flat_map(|c| c.bytes.to_vec()).collect();
    for step in [1, 2, 3, 7, 12, 13, 64, wire.len()] {
        assert_eq!(feed_both(&wire, step), all.len(), "step {step}");
    }
}

#[test]
fn raw_decoder_header_errors_leave_the_buffer_untouched() {
    let c = common::echo_request();
    let limits = Limits::default();
    let mut oversized = c.bytes.to_vec();
    oversized[4..8].copy_from_slice(&(64u32 << 20 | 1).to_be_bytes());
    let mut meta_too_big = c.bytes.to_vec();
    meta_too_big[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    for (input, code) in [
        (&b"GET / HTTP/1.1\r\n"[..], "bad_magic"),
        (b"PRPX", "bad_magic"),
        (&oversized[..12], "oversized"),
        (&meta_too_big[..], "meta_larger_than_body"),
    ] {
        let mut a = BytesMut::from(input);
        let mut b = BytesMut::from(input);
        let e = decode_raw_frame(&mut b, &limits).unwrap_err();
        assert_eq!(e.code(), code);
        assert_eq!(
            decode_frame(&mut a, &limits).unwrap_err().to_string(),
            e.to_string()
        );
        assert_eq!(&b[..], input, "{code}: buffer untouched");
    }
}

/// A frame with the given meta bytes and rest of body.
fn frame_bytes(meta: &[u8], rest: &[u8]) -> BytesMut {
    let header = FrameHeader {
        body_size: (meta.len() + rest.len()) as u32,
        meta_size: meta.len() as u32,
    };
    let mut out = BytesMut::from(&header.to_bytes()[..]);
    out.extend_from_slice(meta);
    out.extend_from_slice(rest);
    out
}

#[test]
fn body_errors_come_after_the_frame_was_cut() {
    // A meta that does not parse, then a good frame.
    let good = common::echo_request().bytes;
    let mut buf = frame_bytes(&[0x0a, 0x05, 0x0a], b"payload");
    buf.extend_from_slice(&good);
    let bad = decode_raw_frame(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    let e = bad.meta().unwrap_err();
    assert!(
        matches!(
            e,
            WireError::BadMetaField {
                field: "RpcMeta.request",
                reason: BadMetaReason::Truncated
            }
        ),
        "{e:?}"
    );
    assert!(matches!(bad.into_frame(), Err(WireError::BadMeta(_))));
    assert_eq!(
        &buf[..],
        &good[..],
        "the next call starts at the next frame"
    );

    // attachment_size larger than what follows the meta, and negative.
    for size in [8, -1] {
        let meta = RpcMeta {
            correlation_id: 77,
            attachment_size: size,
            ..RpcMeta::default()
        };
        let mut buf = frame_bytes(&meta.encode_to_vec(), b"1234567");
        let raw = decode_raw_frame(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        let e = raw.split(&raw.meta().unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::AttachmentLargerThanPayload { attachment_size, available: 7, correlation_id: 77 }
                    if attachment_size == size
            ),
            "{e:?}"
        );
    }
}

#[test]
fn unknown_fields_are_skipped_and_groups_rejected() {
    let c = common::echo_request();
    let raw = raw(&c);
    let expected = raw.meta().unwrap();
    // Fields 100 (varint), 101 (length-delimited), 102 (fixed64) and
    // 103 (fixed32) appended: a newer peer's meta.
    let mut meta = raw.meta_bytes().to_vec();
    meta.extend_from_slice(&[0xa0, 0x06, 0x2a, 0xaa, 0x06, 0x02, b'h', b'i']);
    meta.extend_from_slice(&[0xb1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0xbd, 0x06, 1, 2, 3, 4]);
    assert_eq!(MetaView::parse(&meta).unwrap(), expected);
    // Also inside the request meta.
    let mut request = RpcMeta::request("s", "m", 1)
        .request
        .unwrap()
        .encode_to_vec();
    request.extend_from_slice(&[0xa0, 0x06, 0x2a]);
    let mut meta = vec![0x0a, request.len() as u8];
    meta.extend_from_slice(&request);
    let view = MetaView::parse(&meta).unwrap();
    let request = view.request.unwrap();
    assert_eq!((&*request.service_name, &*request.method_name), ("s", "m"));

    // A group in an unknown field: prost skips it, MetaView refuses it (brpc
    // never sends groups).
    let mut meta = raw.meta_bytes().to_vec();
    meta.extend_from_slice(&[0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]);
    assert!(RpcMeta::decode(&meta[..]).is_ok());
    assert!(matches!(
        MetaView::parse(&meta),
        Err(WireError::BadMetaField {
            field: "RpcMeta",
            reason: BadMetaReason::Group
        })
    ));
}

#[test]
fn malformed_metas_fail_where_prost_fails() {
    let cases: &[(&[u8], &str, BadMetaReason)] = &[
        // request with a truncated varint inside
        (
            &[0x0a, 0x02, 0x18, 0x80],
            "RpcRequestMeta.log_id",
            BadMetaReason::TruncatedVarint,
        ),
        // correlation_id with 11 bytes
        (
            &[
                0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            "RpcMeta.correlation_id",
            BadMetaReason::VarintOverflow,
        ),
        // correlation_id as a string
        (
            &[0x22, 0x00],
            "RpcMeta.correlation_id",
            BadMetaReason::WrongWireType,
        ),
        // authentication_data as a varint
        (
            &[0x38, 0x00],
            "RpcMeta.authentication_data",
            BadMetaReason::WrongWireType,
        ),
        // timeout_ms as fixed32
        (
            &[0x0a, 0x05, 0x45, 0, 0, 0, 0],
            "RpcRequestMeta.timeout_ms",
            BadMetaReason::WrongWireType,
        ),
        // chunk_info.stream_id as bytes
        (
            &[0x32, 0x02, 0x0a, 0x00],
            "ChunkInfo.stream_id",
            BadMetaReason::WrongWireType,
        ),
        // stream_settings.writable as bytes
        (
            &[0x42, 0x02, 0x1a, 0x00],
            "StreamSettings.writable",
            BadMetaReason::WrongWireType,
        ),
        // content_type as bytes, checksum_value as a varint
        (
            &[0x52, 0x00],
            "RpcMeta.content_type",
            BadMetaReason::WrongWireType,
        ),
        (
            &[0x60, 0x00],
            "RpcMeta.checksum_value",
            BadMetaReason::WrongWireType,
        ),
        // length past the end
        (
            &[0x3a, 0x05, 0x00],
            "RpcMeta.authentication_data",
            BadMetaReason::Truncated,
        ),
        // a field in the request that runs past the request's end
        (
            &[0x0a, 0x02, 0x0a, 0x02, 0x61, 0x62],
            "RpcRequestMeta.service_name",
            BadMetaReason::Truncated,
        ),
        // wire type 7, field number 0, a key over 32 bits
        (&[0x0f], "RpcMeta", BadMetaReason::InvalidWireType),
        (&[0x00, 0x00], "RpcMeta", BadMetaReason::FieldNumberZero),
        (
            &[0x80, 0x80, 0x80, 0x80, 0x10],
            "RpcMeta",
            BadMetaReason::KeyOverflow,
        ),
        // an unknown fixed64 cut short
        (
            &[0xb1, 0x06, 1, 2, 3],
            "RpcMeta",
            BadMetaReason::TruncatedFixed,
        ),
        // a stray end-group
        (&[0xa4, 0x06], "RpcMeta", BadMetaReason::Group),
    ];
    for &(meta, field, reason) in cases {
        let e = MetaView::parse(meta).unwrap_err();
        assert!(
            matches!(e, WireError::BadMetaField { field: f, reason: r } if f == field && r == reason),
            "{}: {e:?}",
            meta.escape_ascii()
        );
        assert_eq!(e.code(), "bad_meta");
        assert!(
            RpcMeta::decode(meta).is_err(),
            "prost refuses {} too",
            meta.escape_ascii()
        );
    }
}

#[test]
fn encode_request_reproduces_the_captured_requests() {
    // The wire_cases requests carry service, method and correlation id only.
    for c in common::wire_cases().into_iter().filter(|c| c.is_request) {
        let raw = raw(&c);
        let view = raw.meta().unwrap();
        let request = view.request.clone().unwrap();
        let (payload, _) = raw.split(&view).unwrap();
        let mut out = BytesMut::new();
        let header = RequestHeader::new(
            &request.service_name,
            &request.method_name,
            view.correlation_id,
        );
        encode_request(
            &mut out,
            &header,
            payload.len(),
            |b| b.put_slice(&payload),
            &[],
        )
        .unwrap();
        assert_eq!(out, c.bytes, "{}", c.name);
    }
}

#[test]
fn encode_response_answers_like_brpc() {
    // Every captured response, re-encoded: same meaning, and brpc's
    // `response { error_code }` bytes, minus the defaults brpc also writes.
    for c in common::all().into_iter().filter(|c| !c.is_request) {
        let brpc = frame(&c);
        let response = brpc.meta.response.as_ref().unwrap();
        let mut out = BytesMut::new();
        encode_response(
            &mut out,
            brpc.meta.correlation_id,
            response.error_code,
            &response.error_text,
            brpc.meta.compress_type,
            &brpc.payload,
            &brpc.attachment,
        )
        .unwrap();
        let ours = Frame::decode(out.clone().freeze(), &Limits::default()).unwrap();
        assert_eq!(
            ours,
            Frame {
                meta: common::kept_by_view(&brpc.meta),
                ..brpc.clone()
            },
            "{}",
            c.name
        );
        let brpc_meta = &c.bytes[HEADER_LEN..HEADER_LEN + c.claimed.meta_size];
        let ours_meta = &out[HEADER_LEN..HEADER_LEN + ours.meta.encoded_len()];
        let response_field = |meta: &[u8]| meta[..2 + meta[1] as usize].to_vec();
        assert_eq!(
            response_field(ours_meta),
            response_field(brpc_meta),
            "{}",
            c.name
        );
    }
}

#[test]
fn encoders_match_encode_frame_byte_for_byte() {
    let header = RequestHeader {
        log_id: 1,
        trace_id: -2,
        span_id: 3,
        parent_span_id: 1 << 40,
        timeout_ms: Some(-1),
        compress_type: 1,
        attachment_len: 3,
        ..RequestHeader::new("example.EchoService", "Echo", 9)
    };
    let mut ours = BytesMut::new();
    encode_request(&mut ours, &header, 2, |b| b.put_slice(b"hi"), b"att").unwrap();
    let meta = RpcMeta {
        request: Some(keel_wire::baidu_std::RpcRequestMeta {
            log_id: 1,
            trace_id: -2,
            span_id: 3,
            parent_span_id: 1 << 40,
            timeout_ms: Some(-1),
            ..RpcMeta::request("example.EchoService", "Echo", 9)
                .request
                .unwrap()
        }),
        compress_type: 1,
        ..RpcMeta::request("", "", 9)
    }
    .with_attachment_size(3);
    let mut theirs = BytesMut::new();
    encode_frame(&mut theirs, &meta, 2, |b| b.put_slice(b"hi"), b"att").unwrap();
    assert_eq!(ours, theirs);

    let mut ours = BytesMut::new();
    encode_response(
        &mut ours,
        9,
        errno::ENOMETHOD,
        "no such method",
        0,
        b"",
        b"",
    )
    .unwrap();
    let mut theirs = BytesMut::new();
    let meta = RpcMeta::response(9, errno::ENOMETHOD, "no such method");
    encode_frame(&mut theirs, &meta, 0, |_| {}, b"").unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn encoder_errors_leave_dst_as_it_was() {
    let mut dst = BytesMut::from(&b"earlier frames"[..]);
    let header = RequestHeader::new("s", "m", 1);
    for (declared, write) in [(3, &b"four"[..]), (5, b"four"), (1, b"")] {
        let e =
            encode_request(&mut dst, &header, declared, |b| b.put_slice(write), &[]).unwrap_err();
        assert!(
            matches!(e, WireError::PayloadLengthMismatch { declared: d, written } if d == declared && written == write.len()),
            "{e:?}"
        );
        assert_eq!(&dst[..], b"earlier frames");
    }
    let e = encode_request(&mut dst, &header, 0, |b| b.clear(), &[]).unwrap_err();
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

    let mut dst = BytesMut::from(&b"earlier"[..]);
    let e = encode_request(&mut dst, &header, 0, |_| panic!("not called"), b"abc").unwrap_err();
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
    let with_attachment = RequestHeader {
        attachment_len: 2,
        ..header
    };
    let e = encode_request(
        &mut dst,
        &with_attachment,
        0,
        |_| panic!("not called"),
        b"abc",
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            WireError::AttachmentSizeMismatch {
                in_meta: 2,
                actual: 3
            }
        ),
        "{e:?}"
    );
    let huge = RequestHeader {
        attachment_len: 1 << 31,
        ..header
    };
    let e = encode_request(&mut dst, &huge, 0, |_| panic!("not called"), b"").unwrap_err();
    assert!(
        matches!(e, WireError::AttachmentTooLarge { size } if size == 1 << 31),
        "{e:?}"
    );
    assert_eq!(e.code(), "attachment_too_large");

    let e = encode_request(
        &mut dst,
        &header,
        u32::MAX as usize,
        |_| panic!("not called"),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(e, WireError::FrameTooLarge { size } if size > u32::MAX as u64),
        "{e:?}"
    );
    assert_eq!(&dst[..], b"earlier");
}

#[test]
fn encoders_reserve_once() {
    let payload = vec![7u8; 1000];
    let mut dst = BytesMut::new();
    encode_response(&mut dst, 1, 0, "", 0, &payload, b"att").unwrap();
    let frame_len = dst.len();
    // The exact size was reserved: nothing was re-grown along the way.
    assert!(dst.capacity() >= frame_len);
    let mut dst = BytesMut::with_capacity(frame_len);
    let ptr = dst.as_ptr();
    encode_response(&mut dst, 1, 0, "", 0, &payload, b"att").unwrap();
    assert_eq!(
        (dst.len(), dst.as_ptr()),
        (frame_len, ptr),
        "written in place"
    );
    assert_eq!(
        RawFrame::decode(dst.freeze(), &Limits::default())
            .unwrap()
            .split(&MetaView {
                attachment_size: 3,
                ..MetaView::default()
            })
            .unwrap(),
        (Bytes::from(payload), Bytes::from_static(b"att"))
    );
}

#[test]
fn user_fields_agree_with_prost() {
    let mut meta = RpcMeta::request("s", "m", 1);
    meta.user_fields.insert("b".into(), "2".into());
    meta.user_fields.insert("a".into(), "1".into());
    meta.user_fields.insert("".into(), "".into());
    let bytes = meta.encode_to_vec();
    let view = MetaView::parse(&bytes).unwrap();
    assert_view_eq(&view, &meta, "user_fields");
    // prost writes a BTreeMap in key order, empty strings omitted.
    assert!(
        view.user_fields()
            .eq([("", ""), ("a", "1"), ("b", "2")].map(|(k, v)| (k.into(), v.into())))
    );
    assert_eq!(view.user_fields.get("").as_deref(), Some(""));
}

#[test]
fn strings_prost_refuses_as_not_utf8_are_carried_lossily() {
    // brpc (C++ proto2) sends any bytes in a string; prost refuses them,
    // MetaView carries them with U+FFFD in place of each invalid sequence.
    let cases: &[(&[u8], &str)] = &[
        // service_name
        (&[0x0a, 0x03, 0x0a, 0x01, 0xc3], "service_name"),
        // error_text
        (&[0x12, 0x03, 0x12, 0x01, 0x80], "error_text"),
        // a user_fields value
        (&[0x4a, 0x03, 0x12, 0x01, 0xff], "user_fields"),
    ];
    for &(meta, what) in cases {
        assert!(RpcMeta::decode(meta).is_err(), "prost refuses {what}");
        let view = MetaView::parse(meta).unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = match what {
            "service_name" => view.request.unwrap().service_name,
            "error_text" => view.response.unwrap().error_text,
            _ => view.user_fields().next().unwrap().1,
        };
        assert_eq!(text, "\u{fffd}", "{what}");
    }
}
