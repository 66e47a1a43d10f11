//! Property tests: any frame round-trips, any bytes are handled without panic.

use bytes::{Bytes, BytesMut};
use keel_wire::baidu_std::{
    ChunkInfo, Frame, Limits, RpcMeta, RpcRequestMeta, RpcResponseMeta, StreamSettings,
    decode_frame, encode_frame,
};
use keel_wire::{CompressType, compress, decompress, sniff};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn request_meta() -> impl Strategy<Value = RpcRequestMeta> {
    (
        ("[a-z.]{0,30}", "[A-Za-z]{0,12}", "\\PC{0,8}"),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()),
        option::of(any::<i32>()),
    )
        .prop_map(
            |((service, method, request_id), (log, trace, span, parent), timeout_ms)| {
                RpcRequestMeta {
                    service_name: service,
                    method_name: method,
                    log_id: log,
                    trace_id: trace,
                    span_id: span,
                    parent_span_id: parent,
                    request_id,
                    timeout_ms,
                }
            },
        )
}

fn response_meta() -> impl Strategy<Value = RpcResponseMeta> {
    (any::<i32>(), "\\PC{0,40}").prop_map(|(error_code, error_text)| RpcResponseMeta {
        error_code,
        error_text,
    })
}

/// A request or response meta with any of the optional parts set.
/// `attachment_size` is left 0: the frame strategy sets it.
fn meta() -> impl Strategy<Value = RpcMeta> {
    let side = prop_oneof![
        request_meta().prop_map(|r| (Some(r), None)),
        response_meta().prop_map(|r| (None, Some(r))),
    ];
    (
        side,
        (0..5i32, any::<i64>()),
        option::of((any::<i64>(), any::<i64>())),
        option::of((any::<i64>(), any::<bool>(), any::<bool>())),
        (bytes(16), btree_map("[a-z-]{1,8}", "\\PC{0,8}", 0..4)),
        (0..3i32, 0..2i32, bytes(8)),
    )
        .prop_map(
            |(
                (request, response),
                (compress_type, correlation_id),
                chunk,
                stream,
                (authentication_data, user_fields),
                (content_type, checksum_type, checksum_value),
            )| RpcMeta {
                request,
                response,
                compress_type,
                correlation_id,
                attachment_size: 0,
                chunk_info: chunk.map(|(stream_id, chunk_id)| ChunkInfo {
                    stream_id,
                    chunk_id,
                }),
                authentication_data,
                stream_settings: stream.map(|(stream_id, need_feedback, writable)| {
                    StreamSettings {
                        stream_id,
                        need_feedback,
                        writable,
                    }
                }),
                user_fields,
                content_type,
                checksum_type,
                checksum_value,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    (meta(), bytes(300), bytes(100)).prop_map(|(mut meta, payload, attachment)| {
        meta.attachment_size = attachment.len() as i32;
        Frame {
            meta,
            payload,
            attachment,
        }
    })
}

fn encode(frame: &Frame) -> BytesMut {
    let mut dst = BytesMut::new();
    encode_frame(
        &mut dst,
        &frame.meta,
        frame.payload.len(),
        |b| b.extend_from_slice(&frame.payload),
        &frame.attachment,
    )
    .expect("a valid frame encodes");
    dst
}

proptest! {
    #[test]
    fn whole_frame_round_trip(frame in frame()) {
        let encoded = encode(&frame).freeze();
        prop_assert_eq!(Frame::decode(encoded, &Limits::default()).unwrap(), frame);
    }

    #[test]
    fn streaming_round_trip(frames in vec(frame(), 1..4), chunk in 1..64usize) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(f) = decode_frame(&mut buf, &Limits::default()).unwrap() {
                decoded.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..200), max in 0..256usize) {
        let limits = Limits::new(max);
        let _ = Frame::decode(Bytes::from(input.clone()), &limits);
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(_)) = decode_frame(&mut buf, &limits) {}
        for kind in [CompressType::None, CompressType::Snappy, CompressType::Gzip, CompressType::Zlib] {
            let _ = decompress(kind, &input, max);
        }
        let _ = sniff(&input);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        meta_size in 0..40u32,
        body in vec(any::<u8>(), 0..80),
    ) {
        // Random bytes rarely pass the magic; this sends them to the meta
        // decoder and the attachment checks.
        let meta_size = meta_size.min(body.len() as u32);
        let mut input = b"PRPC".to_vec();
        input.extend_from_slice(&(body.len() as u32).to_be_bytes());
        input.extend_from_slice(&meta_size.to_be_bytes());
        input.extend_from_slice(&body);
        let _ = Frame::decode(Bytes::from(input), &Limits::default());
    }

    #[test]
    fn compression_round_trip(data in vec(any::<u8>(), 0..2000), repeat in 1..20usize) {
        let data = data.repeat(repeat);
        for kind in [CompressType::None, CompressType::Snappy, CompressType::Gzip, CompressType::Zlib] {
            let mut packed = BytesMut::new();
            compress(kind, &data, &mut packed).unwrap();
            prop_assert_eq!(&decompress(kind, &packed, data.len()).unwrap()[..], &data[..]);
        }
    }
}
