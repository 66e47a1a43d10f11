//! Keel against bytes captured from a real brpc 1.17 echo client and server
//! (`tests/vectors/`, copied unmodified from the project's shared vectors).

mod common;

use bytes::{Bytes, BytesMut};
use common::{Capture, EchoMessage};
use keel_wire::baidu_std::{
    Frame, FrameHeader, HEADER_LEN, Limits, RpcMeta, encode_frame, encode_message_frame, errno,
};
use prost::Message;

fn decode(capture: &Capture) -> Frame {
    Frame::decode(capture.bytes.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", capture.name))
}

fn message(payload: &[u8]) -> Option<String> {
    EchoMessage::decode(payload)
        .expect("payload is an EchoMessage")
        .message
}

fn rs(n: usize) -> String {
    "r".repeat(n)
}

#[test]
fn every_capture_decodes_and_matches_its_comment() {
    let all = common::all();
    // 4 files of one frame each; wire_cases.txt: 4 requests, 6 responses.
    assert_eq!(all.len(), 4 + 10, "captures found");
    for c in &all {
        let header = FrameHeader::parse(&c.bytes).unwrap();
        let frame = decode(c);
        assert_eq!(header.frame_len(), c.bytes.len(), "{}", c.name);
        assert_eq!(header.body_size as usize, c.claimed.body_size, "{}", c.name);
        assert_eq!(header.meta_size as usize, c.claimed.meta_size, "{}", c.name);
        assert_eq!(frame.payload.len(), c.claimed.payload_size, "{}", c.name);
        assert_eq!(
            frame.attachment.len(),
            c.claimed.attachment_size,
            "{}",
            c.name
        );
        assert_eq!(
            frame.meta.attachment_size as usize,
            c.claimed.attachment_size
        );
        assert_eq!(frame.meta.request.is_some(), c.is_request, "{}", c.name);
        assert_eq!(frame.meta.response.is_some(), !c.is_request, "{}", c.name);
        assert_eq!(frame.meta.compress_type, 0, "{}", c.name);
        assert!(frame.meta.chunk_info.is_none() && frame.meta.stream_settings.is_none());
        // The payload and attachment are slices of the frame, not copies.
        let range = c.bytes.as_ptr_range();
        assert!(frame.payload.is_empty() || range.contains(&frame.payload.as_ptr()));
        assert!(frame.attachment.is_empty() || range.contains(&frame.attachment.as_ptr()));
    }
}

#[test]
fn brpc_echo_request() {
    let frame = decode(&common::echo_request());
    let request = frame.meta.request.as_ref().unwrap();
    assert_eq!(request.service_name, "example.EchoService");
    assert_eq!(request.method_name, "Echo");
    assert_eq!(request.log_id, 0);
    assert_eq!(request.timeout_ms, None);
    assert_eq!(frame.meta.correlation_id, 1_099_511_627_778);
    // brpc 1.17 writes these defaults explicitly; they decode as defaults.
    assert_eq!(frame.meta.content_type, 0);
    assert_eq!(frame.meta.checksum_type, 0);
    assert!(frame.meta.checksum_value.is_empty());
    assert_eq!(message(&frame.payload), Some(rs(16)));
    assert!(frame.attachment.is_empty());
}

#[test]
fn brpc_echo_response() {
    let frame = decode(&common::echo_response());
    let response = frame.meta.response.as_ref().unwrap();
    assert_eq!(response.error_code, 0);
    assert_eq!(response.error_text, "");
    assert_eq!(frame.meta.correlation_id, 1_099_511_627_778);
    assert_eq!(message(&frame.payload), Some(rs(16)));
    assert!(frame.attachment.is_empty());
}

#[test]
fn brpc_echo_with_attachment() {
    let request = decode(&common::echo_request_attachment());
    let response = decode(&common::echo_response_attachment());
    for frame in [&request, &response] {
        assert_eq!(frame.meta.correlation_id, 4_294_967_298);
        assert_eq!(frame.meta.attachment_size, 3);
        assert_eq!(message(&frame.payload).as_deref(), Some("hello world"));
        assert_eq!(&frame.attachment[..], b"foo");
    }
    let r = request.meta.request.as_ref().unwrap();
    assert_eq!(
        (&*r.service_name, &*r.method_name),
        ("example.EchoService", "Echo")
    );
    assert_eq!(response.meta.error_code(), 0);
}

#[test]
fn brpc_wire_cases() {
    let cases: Vec<(Capture, Frame)> = common::wire_cases()
        .into_iter()
        .map(|c| {
            let f = decode(&c);
            (c, f)
        })
        .collect();
    let find = |is_request: bool, cid: i64| {
        cases
            .iter()
            .find(|(c, f)| c.is_request == is_request && f.meta.correlation_id == cid)
            .map(|(_, f)| f)
            .unwrap_or_else(|| panic!("no capture with correlation_id {cid}"))
    };
    let service_method = |f: &Frame| {
        let r = f.meta.request.as_ref().unwrap();
        (r.service_name.clone(), r.method_name.clone())
    };

    // 7: minimal request meta, normal answer.
    let req = find(true, 7);
    assert_eq!(
        service_method(req),
        ("example.EchoService".into(), "Echo".into())
    );
    assert_eq!(message(&req.payload), Some(rs(16)));
    let resp = find(false, 7);
    assert_eq!(resp.meta.error_code(), 0);
    assert_eq!(message(&resp.payload), Some(rs(16)));

    // 8: unknown service; brpc 1.17 answers ENOMETHOD rather than ENOSERVICE.
    assert_eq!(service_method(find(true, 8)).0, "example.NoSuchService");
    let resp = find(false, 8);
    assert_eq!(resp.meta.error_code(), errno::ENOMETHOD);
    let text = &resp.meta.response.as_ref().unwrap().error_text;
    assert!(
        text.contains("Fail to find method=example.NoSuchService/Echo"),
        "{text}"
    );
    assert!(resp.payload.is_empty());

    // 9: unknown method.
    assert_eq!(service_method(find(true, 9)).1, "NoSuchMethod");
    let resp = find(false, 9);
    assert_eq!(resp.meta.error_code(), errno::ENOMETHOD);
    assert!(resp.payload.is_empty());

    // 10: empty payload, so EchoRequest's required field is missing.
    let req = find(true, 10);
    assert!(req.payload.is_empty());
    let resp = find(false, 10);
    assert_eq!(resp.meta.error_code(), errno::EREQUEST);
    let text = &resp.meta.response.as_ref().unwrap().error_text;
    assert!(
        text.contains("Fail to parse request=example.EchoRequest"),
        "{text}"
    );

    // 11 and 12: pipelined, answered out of order (12 first). The capture
    // holds only the two responses.
    let pipelined: Vec<&Frame> = cases
        .iter()
        .filter(|(c, _)| c.name.contains("pipelined"))
        .map(|(_, f)| f)
        .collect();
    assert_eq!(pipelined.len(), 2);
    assert_eq!(pipelined[0].meta.correlation_id, 12);
    assert_eq!(message(&pipelined[0].payload).as_deref(), Some("second"));
    assert_eq!(pipelined[1].meta.correlation_id, 11);
    assert_eq!(message(&pipelined[1].payload).as_deref(), Some("first"));
}

/// What a Keel echo server answers to `request`, built with Keel's encoder.
fn serve(request: &Frame) -> BytesMut {
    let cid = request.meta.correlation_id;
    let r = request.meta.request.as_ref().expect("a request");
    let error = |code: i32, text: String| {
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            &RpcMeta::response(cid, code, text),
            0,
            |_| {},
            &[],
        )
        .unwrap();
        out
    };
    if r.service_name != "example.EchoService" {
        return error(errno::ENOSERVICE, format!("no service {}", r.service_name));
    }
    if r.method_name != "Echo" {
        return error(errno::ENOMETHOD, format!("no method {}", r.method_name));
    }
    let parsed = EchoMessage::decode(request.payload.clone());
    let Ok(EchoMessage {
        message: Some(text),
    }) = parsed
    else {
        return error(errno::EREQUEST, "EchoRequest.message is required".into());
    };
    let meta = RpcMeta::response(cid, 0, "").with_attachment_size(request.attachment.len() as i32);
    let mut out = BytesMut::new();
    encode_message_frame(
        &mut out,
        &meta,
        &EchoMessage {
            message: Some(text),
        },
        &request.attachment,
    )
    .unwrap();
    out
}

#[test]
fn keel_answers_every_captured_request_like_brpc() {
    let all = common::all();
    let requests: Vec<Frame> = all.iter().filter(|c| c.is_request).map(decode).collect();
    let responses: Vec<Frame> = all.iter().filter(|c| !c.is_request).map(decode).collect();
    assert_eq!(requests.len(), 6);
    for request in &requests {
        let cid = request.meta.correlation_id;
        let brpc = responses
            .iter()
            .find(|r| r.meta.correlation_id == cid)
            .unwrap_or_else(|| panic!("brpc's answer to {cid} was captured"));
        let ours = Frame::decode(serve(request).freeze(), &Limits::default()).unwrap();

        assert_eq!(ours.meta.correlation_id, brpc.meta.correlation_id);
        let (our_code, brpc_code) = (ours.meta.error_code(), brpc.meta.error_code());
        if our_code == errno::ENOSERVICE {
            // brpc's errno table has ENOSERVICE, but 1.17 answers ENOMETHOD.
            assert_eq!(brpc_code, errno::ENOMETHOD, "correlation_id {cid}");
        } else {
            assert_eq!(our_code, brpc_code, "correlation_id {cid}");
        }
        let our_text = &ours.meta.response.as_ref().unwrap().error_text;
        let brpc_text = &brpc.meta.response.as_ref().unwrap().error_text;
        assert_eq!(
            our_text.is_empty(),
            brpc_text.is_empty(),
            "correlation_id {cid}"
        );
        if our_code == 0 {
            assert_eq!(message(&ours.payload), message(&brpc.payload));
        } else {
            assert!(ours.payload.is_empty() && brpc.payload.is_empty());
        }
        assert_eq!(ours.attachment, brpc.attachment);
        assert_eq!(ours.meta.attachment_size, brpc.meta.attachment_size);
    }
}

#[test]
fn reencoded_brpc_frames_decode_equal() {
    for c in common::all() {
        let frame = decode(&c);
        let mut out = BytesMut::new();
        frame.encode(&mut out).unwrap();
        // Keel omits the defaults brpc writes explicitly, so it is never longer.
        assert!(out.len() <= c.bytes.len(), "{}", c.name);
        let again = Frame::decode(out.freeze(), &Limits::default()).unwrap();
        assert_eq!(again, frame, "{}", c.name);
    }
}

#[test]
fn minimal_requests_are_byte_identical_to_the_captures() {
    // The wire_cases requests carry only service, method and correlation id:
    // exactly what RpcMeta::request writes, so Keel's bytes match byte for byte.
    for c in common::wire_cases().into_iter().filter(|c| c.is_request) {
        let frame = decode(&c);
        let r = frame.meta.request.as_ref().unwrap();
        let meta = RpcMeta::request(&*r.service_name, &*r.method_name, frame.meta.correlation_id);
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            &meta,
            frame.payload.len(),
            |b| b.extend_from_slice(&frame.payload),
            &[],
        )
        .unwrap();
        assert_eq!(out, c.bytes, "{}", c.name);
    }
}

#[test]
fn unknown_meta_fields_are_skipped() {
    // The brpc echo request with a field 100 (varint) and a field 101
    // (length-delimited) appended to its meta: a newer peer's meta.
    let c = common::echo_request();
    let header = FrameHeader::parse(&c.bytes).unwrap();
    let meta_end = HEADER_LEN + header.meta_size as usize;
    let extra = [0xa0, 0x06, 0x2a, 0xaa, 0x06, 0x02, b'h', b'i'];
    let patched = FrameHeader {
        body_size: header.body_size + extra.len() as u32,
        meta_size: header.meta_size + extra.len() as u32,
    };
    let mut bytes = patched.to_bytes().to_vec();
    bytes.extend_from_slice(&c.bytes[HEADER_LEN..meta_end]);
    bytes.extend_from_slice(&extra);
    bytes.extend_from_slice(&c.bytes[meta_end..]);
    let frame = Frame::decode(Bytes::from(bytes), &Limits::default()).unwrap();
    assert_eq!(frame, decode(&c));
}
