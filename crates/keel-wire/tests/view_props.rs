//! Property tests of the zero-allocation path against prost: any meta prost
//! writes parses to the same values, any frame the encoders write is the
//! frame `encode_frame` writes, and any bytes are handled without panic.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::assert_view_eq;
use keel_wire::baidu_std::{
    ChunkInfo, Frame, Limits, MetaView, RequestHeader, RpcMeta, RpcRequestMeta, RpcResponseMeta,
    StreamSettings, decode_frame, decode_raw_frame, encode_frame, encode_request, encode_response,
};
use keel_wire::{BadMetaReason, WireError};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use prost::Message;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Small and negative values too: negative int32s are 10-byte varints.
fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), 0..5i32, any::<i32>()]
}

fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), any::<i64>()]
}

fn request_meta() -> impl Strategy<Value = RpcRequestMeta> {
    (
        ("[a-z.]{0,30}", "[A-Za-z]{0,12}", "\\PC{0,8}"),
        (int64(), int64(), int64(), int64()),
        option::of(int32()),
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
    (int32(), "\\PC{0,40}").prop_map(|(error_code, error_text)| RpcResponseMeta {
        error_code,
        error_text,
    })
}

/// Any `RpcMeta`: request, response, both or neither, every field.
fn meta() -> impl Strategy<Value = RpcMeta> {
    (
        (option::of(request_meta()), option::of(response_meta())),
        (int32(), int64(), int32()),
        option::of((int64(), int64())),
        option::of((int64(), any::<bool>(), any::<bool>())),
        (bytes(16), btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4)),
        (int32(), int32(), bytes(8)),
    )
        .prop_map(
            |(
                (request, response),
                (compress_type, correlation_id, attachment_size),
                chunk,
                stream,
                (authentication_data, user_fields),
                (content_type, checksum_type, checksum_value),
            )| RpcMeta {
                request,
                response,
                compress_type,
                correlation_id,
                attachment_size,
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

/// Parses `bytes` both ways and checks that they agree: the same values when
/// both succeed; a success of `MetaView` where prost fails only for a
/// string that is not UTF-8, which prost refuses and `MetaView` carries
/// lossily (as brpc accepts it); and a failure of `MetaView` where prost
/// succeeds only for a group, which prost skips and `MetaView` refuses.
fn check_agreement(bytes: &[u8]) {
    match (MetaView::parse(bytes), RpcMeta::decode(bytes)) {
        (Ok(view), Ok(meta)) => assert_view_eq(&view, &meta, "parsed both ways"),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) if e.to_string().contains("UTF-8") => {}
        (
            Err(WireError::BadMetaField {
                reason: BadMetaReason::Group,
                ..
            }),
            Ok(_),
        ) => {}
        (view, meta) => panic!(
            "MetaView and prost disagree on {}: {view:?} vs {meta:?}",
            bytes.escape_ascii()
        ),
    }
}

/// A request header, its payload and attachment.
fn request() -> impl Strategy<Value = (RequestHeader<'static>, Bytes, Bytes)> {
    (
        ("[a-z.]{0,30}", "[A-Za-z]{0,12}"),
        (int64(), int64(), int64(), int64(), int64()),
        (option::of(int32()), int32()),
        (bytes(200), bytes(50)),
    )
        .prop_map(
            |(
                (service, method),
                (correlation_id, log_id, trace_id, span_id, parent_span_id),
                (timeout_ms, compress_type),
                (payload, attachment),
            )| {
                let header = RequestHeader {
                    // Leaked: a few hundred short strings per test run.
                    service_name: Box::leak(service.into_boxed_str()),
                    method_name: Box::leak(method.into_boxed_str()),
                    correlation_id,
                    log_id,
                    trace_id,
                    span_id,
                    parent_span_id,
                    timeout_ms,
                    request_id: "",
                    compress_type,
                    attachment_len: attachment.len(),
                    authentication_data: &[],
                    user_fields: &[],
                };
                (header, payload, attachment)
            },
        )
}

/// The `RpcMeta` the prost path builds for `header`.
fn request_rpc_meta(header: &RequestHeader<'_>) -> RpcMeta {
    RpcMeta {
        request: Some(RpcRequestMeta {
            service_name: header.service_name.into(),
            method_name: header.method_name.into(),
            log_id: header.log_id,
            trace_id: header.trace_id,
            span_id: header.span_id,
            parent_span_id: header.parent_span_id,
            request_id: String::new(),
            timeout_ms: header.timeout_ms,
        }),
        compress_type: header.compress_type,
        correlation_id: header.correlation_id,
        attachment_size: header.attachment_len as i32,
        ..RpcMeta::default()
    }
}

/// Arguments of `encode_response`.
#[derive(Debug, Clone)]
struct Response {
    correlation_id: i64,
    error_code: i32,
    error_text: String,
    compress_type: i32,
    payload: Bytes,
    attachment: Bytes,
}

fn response() -> impl Strategy<Value = Response> {
    (
        (int64(), int32(), "\\PC{0,40}", int32()),
        (bytes(200), bytes(50)),
    )
        .prop_map(
            |((correlation_id, error_code, error_text, compress_type), (payload, attachment))| {
                Response {
                    correlation_id,
                    error_code,
                    error_text,
                    compress_type,
                    payload,
                    attachment,
                }
            },
        )
}

impl Response {
    fn encode(&self, dst: &mut BytesMut) {
        encode_response(
            dst,
            self.correlation_id,
            self.error_code,
            &self.error_text,
            self.compress_type,
            &self.payload,
            &self.attachment,
        )
        .expect("a valid response encodes");
    }

    /// The frame the prost path builds for these arguments.
    fn frame(&self) -> Frame {
        let mut meta = RpcMeta::response(self.correlation_id, self.error_code, &*self.error_text)
            .with_attachment_size(self.attachment.len() as i32);
        meta.compress_type = self.compress_type;
        Frame {
            meta,
            payload: self.payload.clone(),
            attachment: self.attachment.clone(),
        }
    }
}

proptest! {
    #[test]
    fn prost_metas_parse_to_the_same_values(meta in meta()) {
        let bytes = meta.encode_to_vec();
        let view = MetaView::parse(&bytes).unwrap();
        assert_view_eq(&view, &meta, "prost-encoded meta");
    }

    #[test]
    fn repeated_fields_merge_like_prost(a in meta(), b in meta()) {
        // Two metas back to back are one meta to protobuf: scalars and
        // strings of `b` win, request and response merge, maps join.
        let mut bytes = a.encode_to_vec();
        bytes.extend_from_slice(&b.encode_to_vec());
        let merged = RpcMeta::decode(&bytes[..]).unwrap();
        let view = MetaView::parse(&bytes).unwrap();
        assert_view_eq(&view, &merged, "merged metas");
    }

    #[test]
    fn damaged_metas_agree_with_prost(
        meta in meta(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = meta.encode_to_vec();
        if !bytes.is_empty() {
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check_agreement(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..200)) {
        check_agreement(&input);
        if let Ok(view) = MetaView::parse(&input) {
            // Walking the user fields again never panics either.
            let _ = view.user_fields().count();
        }
    }

    #[test]
    fn encode_request_writes_what_encode_frame_writes((header, payload, attachment) in request()) {
        let mut ours = BytesMut::new();
        encode_request(&mut ours, &header, payload.len(), |b| b.put_slice(&payload), &attachment)
            .unwrap();
        let expected = Frame {
            meta: request_rpc_meta(&header),
            payload,
            attachment,
        };
        let mut theirs = BytesMut::new();
        expected.encode(&mut theirs).unwrap();
        prop_assert_eq!(&ours, &theirs);

        let mut buf = ours.clone();
        let raw = decode_raw_frame(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_view_eq(&raw.meta().unwrap(), &expected.meta, "request");
        prop_assert_eq!(
            decode_frame(&mut ours, &Limits::default()).unwrap(),
            Some(expected)
        );
    }

    #[test]
    fn encode_response_writes_what_encode_frame_writes(response in response()) {
        let mut ours = BytesMut::new();
        response.encode(&mut ours);
        let expected = response.frame();
        let mut theirs = BytesMut::new();
        encode_frame(
            &mut theirs,
            &expected.meta,
            expected.payload.len(),
            |b| b.put_slice(&expected.payload),
            &expected.attachment,
        )
        .unwrap();
        prop_assert_eq!(&ours, &theirs);

        let mut buf = ours.clone();
        let raw = decode_raw_frame(&mut buf, &Limits::default()).unwrap().unwrap();
        let view = raw.meta().unwrap();
        assert_view_eq(&view, &expected.meta, "response");
        prop_assert_eq!(
            raw.split(&view).unwrap(),
            (expected.payload.clone(), expected.attachment.clone())
        );
        prop_assert_eq!(
            decode_frame(&mut ours, &Limits::default()).unwrap(),
            Some(expected)
        );
    }

    #[test]
    fn raw_and_prost_decoders_cut_the_same_frames(
        requests in vec(request(), 0..3),
        responses in vec(response(), 0..3),
        chunk in 1..64usize,
    ) {
        let mut wire = BytesMut::new();
        for (header, payload, attachment) in &requests {
            encode_request(&mut wire, header, payload.len(), |b| b.put_slice(payload), attachment)
                .unwrap();
        }
        for response in &responses {
            response.encode(&mut wire);
        }
        let limits = Limits::default();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        let mut frames = 0;
        for piece in wire.chunks(chunk) {
            a.extend_from_slice(piece);
            b.extend_from_slice(piece);
            loop {
                match (decode_frame(&mut a, &limits).unwrap(), decode_raw_frame(&mut b, &limits).unwrap()) {
                    (None, None) => break,
                    (Some(frame), Some(raw)) => {
                        let view = raw.meta().unwrap();
                        assert_view_eq(&view, &frame.meta, "streamed");
                        prop_assert_eq!(
                            raw.split(&view).unwrap(),
                            (frame.payload.clone(), frame.attachment.clone())
                        );
                        frames += 1;
                    }
                    (x, y) => panic!("decoders disagree: {x:?} vs {y:?}"),
                }
                prop_assert_eq!(&a, &b);
            }
        }
        prop_assert!(b.is_empty());
        prop_assert_eq!(frames, requests.len() + responses.len());
    }
}
