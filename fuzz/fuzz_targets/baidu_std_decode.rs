//! Arbitrary bytes through every decoding path of `keel-wire`: the streaming
//! frame decoder fed at arbitrary split points, whole-frame decoding, the
//! zero-allocation path (`decode_raw_frame`, `MetaView::parse`, `split`),
//! decompression under a small limit, and protocol sniffing. Nothing may
//! panic, and the decoders must agree.
#![no_main]

use bytes::{Bytes, BytesMut};
use keel_wire::baidu_std::{
    Frame, Limits, MetaView, RawFrame, RequestHeader, RpcMeta, decode_frame, decode_raw_frame,
    encode_request, encode_response,
};
use keel_wire::{BadMetaReason, CompressType, WireError, decompress, sniff};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// `MetaView::parse` and prost agree on `meta`: the same values when both
/// succeed, and a failure of one only where the other fails too, except
/// groups (prost skips them, `MetaView` refuses them) and strings that are
/// not UTF-8 (prost refuses them, `MetaView` carries them lossily, as brpc
/// accepts them). Returns the view.
fn check_meta(meta: &[u8]) -> Option<MetaView<'_>> {
    let view = MetaView::parse(meta);
    match (&view, RpcMeta::decode(meta)) {
        (Ok(view), Ok(prost)) => assert_same(view, &prost),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) if e.to_string().contains("UTF-8") => {}
        (
            Err(WireError::BadMetaField {
                reason: BadMetaReason::Group,
                ..
            }),
            Ok(_),
        ) => {}
        (view, prost) => panic!("MetaView and prost disagree: {view:?} vs {prost:?}"),
    }
    view.ok()
}

/// Every field a `MetaView` keeps equals prost's.
fn assert_same(view: &MetaView<'_>, prost: &RpcMeta) {
    assert_eq!(view.request.is_some(), prost.request.is_some());
    if let (Some(v), Some(p)) = (&view.request, &prost.request) {
        assert_eq!(v.service_name, p.service_name);
        assert_eq!(v.method_name, p.method_name);
        assert_eq!(v.log_id, p.log_id);
        assert_eq!(v.trace_id, p.trace_id);
        assert_eq!(v.span_id, p.span_id);
        assert_eq!(v.parent_span_id, p.parent_span_id);
        assert_eq!(v.request_id, p.request_id);
        assert_eq!(v.timeout_ms, p.timeout_ms);
    }
    assert_eq!(view.response.is_some(), prost.response.is_some());
    if let (Some(v), Some(p)) = (&view.response, &prost.response) {
        assert_eq!(v.error_code, p.error_code);
        assert_eq!(v.error_text, p.error_text);
    }
    assert_eq!(view.compress_type, prost.compress_type);
    assert_eq!(view.correlation_id, prost.correlation_id);
    assert_eq!(view.attachment_size, prost.attachment_size);
    assert_eq!(view.authentication_data, &prost.authentication_data[..]);
    // A map keeps the last value of a key.
    let mut pairs = std::collections::BTreeMap::new();
    for (k, v) in view.user_fields() {
        pairs.insert(k, v);
    }
    assert!(
        pairs.iter().eq(prost
            .user_fields
            .iter()
            .map(|(k, v)| (std::borrow::Cow::from(&k[..]), std::borrow::Cow::from(&v[..])))
            .collect::<std::collections::BTreeMap<_, _>>()
            .iter())
    );
}

/// A frame whose meta the zero-allocation encoders can express is written
/// by them byte for byte as `Frame::encode` writes it.
fn check_encoders(frame: &Frame) {
    let meta = &frame.meta;
    let expressible = meta.chunk_info.is_none()
        && meta.stream_settings.is_none()
        && meta.authentication_data.is_empty()
        && meta.user_fields.is_empty()
        && meta.content_type == 0
        && meta.checksum_type == 0
        && meta.checksum_value.is_empty();
    if !expressible {
        return;
    }
    let mut expected = BytesMut::new();
    frame
        .encode(&mut expected)
        .expect("a decoded frame re-encodes");
    let mut ours = BytesMut::new();
    match (&meta.request, &meta.response) {
        (Some(r), None) => {
            let header = RequestHeader {
                service_name: &r.service_name,
                method_name: &r.method_name,
                correlation_id: meta.correlation_id,
                log_id: r.log_id,
                trace_id: r.trace_id,
                span_id: r.span_id,
                parent_span_id: r.parent_span_id,
                timeout_ms: r.timeout_ms,
                request_id: &r.request_id,
                compress_type: meta.compress_type,
                attachment_len: frame.attachment.len(),
                authentication_data: &[],
                user_fields: &[],
            };
            encode_request(
                &mut ours,
                &header,
                frame.payload.len(),
                |b| b.extend_from_slice(&frame.payload),
                &frame.attachment,
            )
            .expect("a decoded request re-encodes");
        }
        (None, Some(r)) => encode_response(
            &mut ours,
            meta.correlation_id,
            r.error_code,
            &r.error_text,
            meta.compress_type,
            &frame.payload,
            &frame.attachment,
        )
        .expect("a decoded response re-encodes"),
        _ => return,
    }
    assert_eq!(ours, expected);
}

/// A raw frame's view and split agree with its prost decoding; returns the
/// prost decoding.
fn check_raw(raw: &RawFrame) -> Result<Frame, WireError> {
    let prost = raw.clone().into_frame();
    if let Some(view) = check_meta(raw.meta_bytes()) {
        let split = raw.split(&view);
        match (&split, &prost) {
            (Ok((payload, attachment)), Ok(frame)) => {
                assert_eq!(payload, &frame.payload);
                assert_eq!(attachment, &frame.attachment);
            }
            // Meta strings that are not UTF-8 are carried lossily, as brpc
            // reads proto2 strings; prost refuses them, and the view may
            // then find another fault of the frame or none.
            (Ok(_) | Err(_), Err(e)) if e.to_string().contains("UTF-8") => {}
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("split and into_frame disagree: {split:?} vs {prost:?}"),
        }
    }
    prost
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split points (and the limit), the rest is the
    // connection's byte stream.
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limits = Limits::new(if control & 0x80 != 0 {
        1 << 10
    } else {
        1 << 20
    });
    let step = usize::from(control & 0x3f) + 1;

    // Streaming: feed `step`-sized pieces (the last one may be shorter),
    // decoding after each, until an error.
    let mut buf = BytesMut::new();
    let mut streamed = Vec::new();
    let mut stream_error = false;
    'feed: for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode_frame(&mut buf, &limits) {
                Ok(Some(frame)) => streamed.push(frame),
                Ok(None) => break,
                Err(_) => {
                    stream_error = true;
                    break 'feed;
                }
            }
        }
    }

    // The same pieces through the raw decoder: the same frames (with their
    // metas parsed in place too), the same error, at the same point.
    let mut raw_buf = BytesMut::new();
    let mut raw_streamed = Vec::new();
    let mut raw_error = false;
    'raw: for piece in input.chunks(step) {
        raw_buf.extend_from_slice(piece);
        loop {
            match decode_raw_frame(&mut raw_buf, &limits) {
                Ok(Some(raw)) => match check_raw(&raw) {
                    Ok(frame) => raw_streamed.push(frame),
                    Err(_) => {
                        raw_error = true;
                        break 'raw;
                    }
                },
                Ok(None) => break,
                Err(_) => {
                    raw_error = true;
                    break 'raw;
                }
            }
        }
    }
    assert_eq!(raw_error, stream_error);
    assert_eq!(raw_streamed, streamed);
    assert_eq!(raw_buf, buf);
    for frame in &streamed {
        check_encoders(frame);
    }

    // The input as a bare meta, so the meta parser sees every byte.
    check_meta(input);

    // Whole-frame decoding of the same bytes.
    let whole = Frame::decode(Bytes::copy_from_slice(input), &limits);
    let raw_whole =
        RawFrame::decode(Bytes::copy_from_slice(input), &limits).and_then(|raw| check_raw(&raw));
    match (&raw_whole, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("RawFrame::decode and Frame::decode disagree: {raw_whole:?} vs {whole:?}"),
    }
    if let Ok(frame) = &whole {
        // One whole frame decodes the same way in both decoders.
        assert!(!stream_error);
        assert_eq!(streamed.len(), 1);
        assert_eq!(&streamed[0], frame);
        // And re-encodes to bytes that decode equal.
        let mut again = BytesMut::new();
        frame
            .encode(&mut again)
            .expect("a decoded frame re-encodes");
        assert_eq!(
            &Frame::decode(again.freeze(), &limits).expect("re-decodes"),
            frame
        );
    }

    // Every decoded frame's payload through every decompressor, and the
    // whole input too.
    for kind in [
        CompressType::None,
        CompressType::Snappy,
        CompressType::Gzip,
        CompressType::Zlib,
    ] {
        let _ = decompress(kind, input, limits.max_body_size);
        for frame in &streamed {
            let _ = decompress(kind, &frame.payload, 1 << 16);
        }
    }
    let _ = sniff(input);
});
