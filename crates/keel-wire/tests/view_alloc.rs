//! Rule R3: the zero-allocation path allocates nothing per call, counted by
//! the project's counting allocator.

mod common;

use bytes::{BufMut, BytesMut};
use keel_alloc::{CountingAlloc, churn_thread};
use keel_wire::baidu_std::{
    Limits, RequestHeader, decode_raw_frame, encode_request, encode_response,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const WARMUP: u64 = 10;
const ITERS: u64 = 10_000;

#[test]
fn parsing_and_splitting_a_request_allocates_nothing() {
    let mut buf = BytesMut::from(&common::echo_request_attachment().bytes[..]);
    let frame = decode_raw_frame(&mut buf, &Limits::default())
        .unwrap()
        .expect("a whole frame");
    let d = churn_thread(WARMUP, ITERS, |_| {
        let meta = frame.meta().expect("the capture parses");
        let request = meta.request.as_ref().expect("a request");
        assert_eq!(request.method_name, "Echo");
        let (payload, attachment) = frame.split(&meta).expect("the capture splits");
        assert_eq!(attachment.len(), 3);
        std::hint::black_box((payload, attachment));
    });
    assert!(keel_alloc::is_installed());
    assert_eq!(d.allocs, 0, "{d:?}");

    // The control: the prost path allocates the meta's two names.
    let d = churn_thread(WARMUP, 100, |_| {
        std::hint::black_box(frame.clone().into_frame().unwrap());
    });
    assert!(d.allocs >= 2 * 100, "{d:?}");
}

#[test]
fn decoding_a_stream_of_requests_allocates_nothing() {
    // A connection's read buffer: frames arrive, are cut off and dropped, and
    // the buffer's storage is reused once they are gone.
    let capture = common::echo_request().bytes;
    let mut buf = BytesMut::with_capacity(4096);
    let d = churn_thread(WARMUP, ITERS, |_| {
        buf.extend_from_slice(&capture);
        let frame = decode_raw_frame(&mut buf, &Limits::default())
            .unwrap()
            .expect("a whole frame");
        let meta = frame.meta().unwrap();
        assert_eq!(
            meta.request.as_ref().unwrap().service_name,
            "example.EchoService"
        );
        std::hint::black_box(frame.split(&meta).unwrap());
    });
    assert_eq!(d.allocs, 0, "{d:?}");
}

#[test]
fn encoding_into_a_large_enough_buffer_allocates_nothing() {
    let payload = [7u8; 100];
    let mut dst = BytesMut::with_capacity(4096);
    let header = RequestHeader {
        timeout_ms: Some(1000),
        trace_id: 12345,
        attachment_len: 3,
        ..RequestHeader::new("example.EchoService", "Echo", 1)
    };
    let d = churn_thread(WARMUP, ITERS, |i| {
        dst.clear();
        let header = RequestHeader {
            correlation_id: i as i64,
            ..header
        };
        encode_request(
            &mut dst,
            &header,
            payload.len(),
            |b| b.put_slice(&payload),
            b"att",
        )
        .unwrap();
    });
    assert_eq!(d.allocs, 0, "encode_request: {d:?}");

    let d = churn_thread(WARMUP, ITERS, |i| {
        dst.clear();
        encode_response(
            &mut dst,
            i as i64,
            1002,
            "no such method",
            0,
            &payload,
            b"att",
        )
        .unwrap();
    });
    assert_eq!(d.allocs, 0, "encode_response: {d:?}");
}
