//! Compressed messages that lie cannot be turned against their receiver:
//! a 32-byte reply whose snappy header announces 64 MiB fails its own call
//! with ERESPONSE and allocates nothing large, while the good replies on
//! the same connection all arrive; a gzip bomb costs no more than the
//! channel's message limit; and a server refuses a request making the same
//! claim without allocating it, then serves the connection's next request,
//! and inflates a large request off the connection's task. Strings that are
//! not UTF-8 in a meta (brpc sends any bytes in its proto2 strings) fail
//! at most their own call: an `error_text` reaches the caller lossily with
//! the server's code, a service name finds no service. A reply whose meta
//! does not parse fails the call it was for, not the connection.
//!
//! The fake servers answer byte for byte what a test tells them (see
//! `support::fake_baidu`). Client, servers and the counting allocator share
//! this process, so the peaks cover every side.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use keel::{Channel, Code};
use keel_alloc::CountingAlloc;
use keel_wire::baidu_std::{Limits, RequestHeader, decode_raw_frame, encode_request};
use prost::Message;
use support::fake_baidu::{self, response, snappy_claiming};
use support::{EchoResponse, EchoServiceClient, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// More than the calls themselves need (256 small calls in flight), far
/// less than one 64 MiB claim.
const PEAK_BOUND: i64 = 8 << 20;

/// Runs `good` and `bad` calls interleaved on one connection, all at once;
/// returns the outcomes of the bad ones.
/// A channel to `addr` with a 10 s timeout (and what `configure` adds), and
/// its client after one warm-up call.
async fn warm_client(
    addr: &str,
    configure: impl FnOnce(keel::ChannelBuilder) -> keel::ChannelBuilder,
) -> (Channel, EchoServiceClient) {
    let channel = configure(Channel::builder(addr).timeout(Some(Duration::from_secs(10))))
        .build()
        .expect("addr");
    let client = EchoServiceClient::new(&channel);
    client.echo(&request("warm")).await.expect("warm-up");
    (channel, client)
}

async fn interleaved(client: &EchoServiceClient, bad: &str, pairs: usize) -> Vec<keel::Status> {
    let calls: Vec<_> = (0..pairs * 2)
        .map(|i| {
            let client = client.clone();
            let message = if i % 2 == 0 {
                format!("good {i}")
            } else {
                bad.to_owned()
            };
            tokio::spawn(async move { (message.clone(), client.echo(&request(&message)).await) })
        })
        .collect();
    let mut failures = Vec::new();
    for call in calls {
        let (message, result) = call.await.expect("call task");
        match result {
            Ok(reply) => {
                assert!(message.starts_with("good"), "{message} succeeded");
                assert_eq!(reply.message, message);
            }
            Err(status) => {
                assert_eq!(message, bad, "a good call failed: {status}");
                failures.push(status);
            }
        }
    }
    failures
}

#[test]
fn snappy_claims_of_64_mib_fail_their_own_calls_only_and_allocate_nothing_big() {
    support::alone_on(2, async {
        keel::rpcz::tracer().sampler().set_target(0);
        let server = fake_baidu::start(|cid, req| {
            if req.message == "bomb" {
                // 32 bytes of payload whose header announces 64 MiB.
                response(cid, 0, b"", 1, &snappy_claiming(64 << 20, 32))
            } else {
                fake_baidu::echo(cid, req)
            }
        })
        .await;
        let (channel, client) = warm_client(&server.addr, |b| b).await;
        keel_alloc::reset_peak();
        let peak_before = keel_alloc::peak_bytes() as i64;

        // The scenario: 128 bombs among 256 calls on one connection.
        let failures = interleaved(&client, "bomb", 128).await;

        let peak = keel_alloc::peak_bytes() as i64 - peak_before;
        assert_eq!(failures.len(), 128);
        for status in &failures {
            assert_eq!(status.code(), Code::ERESPONSE, "{status}");
            assert!(status.message().contains("at most"), "{status}");
        }
        assert!(peak < PEAK_BOUND, "the heap peaked {peak} bytes higher");
        // All of it on the first connection, and each bomb sent once.
        assert_eq!(server.accepts.load(Ordering::Relaxed), 1);
        assert_eq!(server.requests.load(Ordering::Relaxed), 1 + 256);
        assert_eq!(channel.pending_calls(), 0);
    });
}

#[test]
fn a_gzip_bomb_costs_no_more_than_the_channels_limit() {
    support::alone_on(2, async {
        keel::rpcz::tracer().sampler().set_target(0);
        // 100 gzip members of 1 MiB of zeros each: about 100 KB that inflate
        // to 100 MiB, each member's trailer telling the truth about itself.
        let mut member = BytesMut::new();
        keel_wire::compress(
            keel_wire::CompressType::Gzip,
            &vec![0; 1 << 20],
            &mut member,
        )
        .expect("gzip");
        let bomb = member.repeat(100);
        const LIMIT: usize = 4 << 20;
        let server = fake_baidu::start(move |cid, req| {
            if req.message == "bomb" {
                response(cid, 0, b"", 2, &bomb)
            } else {
                fake_baidu::echo(cid, req)
            }
        })
        .await;
        let (channel, client) = warm_client(&server.addr, |b| b.max_body_size(LIMIT)).await;
        keel_alloc::reset_peak();
        let peak_before = keel_alloc::peak_bytes() as i64;

        let failures = interleaved(&client, "bomb", 8).await;

        let peak = keel_alloc::peak_bytes() as i64 - peak_before;
        assert_eq!(failures.len(), 8);
        for status in &failures {
            assert_eq!(status.code(), Code::ERESPONSE, "{status}");
            assert!(
                status.message().contains("decompresses to more than"),
                "{status}"
            );
        }
        // Each bomb inflates up to the limit at most, in its caller's task;
        // the two workers run two at a time, plus the replies as received.
        assert!(
            peak < 2 * LIMIT as i64 + 8 * (bomb_len() as i64) + PEAK_BOUND,
            "the heap peaked {peak} bytes higher"
        );
        assert_eq!(server.accepts.load(Ordering::Relaxed), 1);
        assert_eq!(channel.pending_calls(), 0);
    });
}

/// The compressed size of the gzip bomb above (for its bound).
fn bomb_len() -> usize {
    let mut member = BytesMut::new();
    keel_wire::compress(
        keel_wire::CompressType::Gzip,
        &vec![0; 1 << 20],
        &mut member,
    )
    .expect("gzip");
    member.len() * 100
}

/// Reads one response frame from `stream`: (error code, payload).
async fn read_answer(stream: &mut tokio::net::TcpStream, inbuf: &mut BytesMut) -> (i32, Vec<u8>) {
    let (_, code, payload) = read_answer_of(stream, inbuf).await;
    (code, payload)
}

/// Reads one response frame from `stream`: (correlation id, error code,
/// payload).
async fn read_answer_of(
    stream: &mut tokio::net::TcpStream,
    inbuf: &mut BytesMut,
) -> (i64, i32, Vec<u8>) {
    loop {
        if let Some(frame) = decode_raw_frame(inbuf, &Limits::default()).expect("a baidu_std frame")
        {
            let meta = frame.meta().expect("meta");
            let (payload, _) = frame.split(&meta).expect("split");
            return (meta.correlation_id, meta.error_code(), payload.to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(inbuf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "the server closed the connection");
    }
}

/// One request frame for `example.EchoService.Echo`.
fn request_frame(cid: i64, compress_type: i32, payload: &[u8]) -> BytesMut {
    let header = RequestHeader {
        service_name: "example.EchoService",
        method_name: "Echo",
        correlation_id: cid,
        compress_type,
        ..RequestHeader::default()
    };
    let mut out = BytesMut::new();
    encode_request(
        &mut out,
        &header,
        payload.len(),
        |dst| dst.extend_from_slice(payload),
        &[],
    )
    .expect("frame");
    out
}

#[test]
fn a_server_refuses_a_64_mib_snappy_claim_without_allocating_it() {
    support::alone_on(2, async {
        keel::rpcz::tracer().sampler().set_target(0);
        let fixture = support::start(|b| b).await;
        let mut stream = tokio::net::TcpStream::connect(fixture.addr())
            .await
            .expect("connect");
        let mut inbuf = BytesMut::new();
        let good = request("after").encode_to_vec();
        // A good request first, so the connection's buffers are warm.
        stream
            .write_all(&request_frame(1, 0, &good))
            .await
            .expect("write");
        assert_eq!(read_answer(&mut stream, &mut inbuf).await.0, 0);
        keel_alloc::reset_peak();
        let peak_before = keel_alloc::peak_bytes() as i64;

        for cid in 2..66 {
            stream
                .write_all(&request_frame(cid, 1, &snappy_claiming(64 << 20, 32)))
                .await
                .expect("write");
            let (code, _) = read_answer(&mut stream, &mut inbuf).await;
            assert_eq!(code, Code::EREQUEST.value());
        }

        let peak = keel_alloc::peak_bytes() as i64 - peak_before;
        assert!(peak < 1 << 20, "the heap peaked {peak} bytes higher");
        // The connection still serves, and no handler saw a bomb.
        stream
            .write_all(&request_frame(99, 0, &good))
            .await
            .expect("write");
        let (code, payload) = read_answer(&mut stream, &mut inbuf).await;
        assert_eq!(code, 0);
        assert_eq!(
            EchoResponse::decode(&payload[..]).expect("echo").message,
            "after"
        );
        assert_eq!(fixture.calls.load(Ordering::Relaxed), 2);
    });
}

#[test]
fn an_error_text_that_is_not_utf8_reaches_the_caller_lossily_and_fails_nothing_else() {
    support::alone_on(2, async {
        keel::rpcz::tracer().sampler().set_target(0);
        // brpc (C++ proto2) sends any bytes as error_text.
        let server = fake_baidu::start(|cid, req| {
            if req.message == "latin-1" {
                response(cid, 4242, b"caf\xe9 ferm\xe9", 0, b"")
            } else {
                fake_baidu::echo(cid, req)
            }
        })
        .await;
        let (_channel, client) = warm_client(&server.addr, |b| b).await;

        let failures = interleaved(&client, "latin-1", 16).await;

        assert_eq!(failures.len(), 16);
        for status in &failures {
            // The server's code and its text, each invalid byte replaced.
            assert_eq!(status.code(), Code::new(4242), "{status}");
            assert_eq!(status.message(), "caf\u{fffd} ferm\u{fffd}");
        }
        // Each call ran once (an answered call is not retried), all on the
        // first connection, which is still up.
        assert_eq!(server.requests.load(Ordering::Relaxed), 1 + 32);
        assert_eq!(server.accepts.load(Ordering::Relaxed), 1);
        client
            .echo(&request("after"))
            .await
            .expect("the connection serves on");
        assert_eq!(server.accepts.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn a_server_inflates_a_large_request_off_its_connections_task() {
    support::alone_on(2, async {
        keel::rpcz::tracer().sampler().set_target(0);
        let fixture = support::start(|b| b).await;
        let mut stream = tokio::net::TcpStream::connect(fixture.addr())
            .await
            .expect("connect");
        let mut inbuf = BytesMut::new();
        // About 100 KB of gzip that inflates past the server's 64 MiB limit,
        // then a good request, in one write.
        let mut member = BytesMut::new();
        keel_wire::compress(
            keel_wire::CompressType::Gzip,
            &vec![0; 1 << 20],
            &mut member,
        )
        .expect("gzip");
        let mut both = request_frame(1, 2, &member.repeat(100));
        both.extend_from_slice(&request_frame(2, 0, &request("meanwhile").encode_to_vec()));
        stream.write_all(&both).await.expect("write");

        // The good request is answered while the bomb still inflates on a
        // task of its own (on the connection's task, it would wait for it).
        let (cid, code, payload) = read_answer_of(&mut stream, &mut inbuf).await;
        assert_eq!(
            (cid, code),
            (2, 0),
            "the request behind the bomb is answered first"
        );
        assert_eq!(
            EchoResponse::decode(&payload[..]).expect("echo").message,
            "meanwhile"
        );
        let (cid, code, _) = read_answer_of(&mut stream, &mut inbuf).await;
        assert_eq!((cid, code), (1, Code::EREQUEST.value()));
        assert_eq!(fixture.calls.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn a_service_name_that_is_not_utf8_fails_its_call_only() {
    support::alone_on(2, async {
        let fixture = support::start(|b| b).await;
        let mut stream = tokio::net::TcpStream::connect(fixture.addr())
            .await
            .expect("connect");
        let mut inbuf = BytesMut::new();
        // RpcMeta { request { service_name "example.Echo\xffService"
        // method_name "Echo" } correlation_id 7 }, no payload: brpc sends any
        // bytes in a proto2 string.
        let service = b"example.Echo\xffService";
        let mut request_meta = vec![0x0a, service.len() as u8];
        request_meta.extend_from_slice(service);
        request_meta.extend_from_slice(b"\x12\x04Echo");
        let mut meta = vec![0x0a, request_meta.len() as u8];
        meta.extend_from_slice(&request_meta);
        meta.extend_from_slice(&[0x20, 7]);
        let mut frame = b"PRPC".to_vec();
        frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        frame.extend_from_slice(&meta);
        stream.write_all(&frame).await.expect("write");
        let (cid, code, _) = read_answer_of(&mut stream, &mut inbuf).await;
        assert_eq!((cid, code), (7, Code::ENOSERVICE.value()));
        // The connection still serves.
        let good = request("after").encode_to_vec();
        stream
            .write_all(&request_frame(8, 0, &good))
            .await
            .expect("write");
        let (cid, code, _) = read_answer_of(&mut stream, &mut inbuf).await;
        assert_eq!((cid, code), (8, 0));
    });
}

#[test]
fn a_reply_whose_meta_does_not_parse_fails_its_own_call_only() {
    support::alone_on(2, async {
        keel::rpcz::tracer().sampler().set_target(0);
        let server = fake_baidu::start(|cid, req| {
            if req.message == "bad meta" {
                // RpcMeta { correlation_id }, then a key of wire type 7.
                let mut meta = vec![0x20];
                fake_baidu::varint(&mut meta, cid as u64);
                meta.extend_from_slice(&[0x0f, 0x01]);
                let mut frame = b"PRPC".to_vec();
                frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
                frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
                frame.extend_from_slice(&meta);
                frame
            } else {
                fake_baidu::echo(cid, req)
            }
        })
        .await;
        let (channel, client) = warm_client(&server.addr, |b| b).await;

        let failures = interleaved(&client, "bad meta", 16).await;

        assert_eq!(failures.len(), 16);
        for status in &failures {
            assert_eq!(status.code(), Code::ERESPONSE, "{status}");
            assert!(status.message().contains("bad response meta"), "{status}");
        }
        // Not retried, all on the first connection.
        assert_eq!(server.requests.load(Ordering::Relaxed), 1 + 32);
        assert_eq!(server.accepts.load(Ordering::Relaxed), 1);
        assert_eq!(channel.pending_calls(), 0);
    });
}
