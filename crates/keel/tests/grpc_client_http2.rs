//! Keel's own HTTP/2 client, frame by frame: a raw server (blocking
//! socket, frames from `keel_wire::http2`, header blocks from
//! `keel_wire::hpack`) checks what Keel, tonic and grpcio servers cannot
//! show: that the client never sends past the server's windows, keeps to
//! the server's limit on streams, answers PINGs, retries a stream the
//! server refused by GOAWAY on a new connection, refuses an oversized
//! answer from its prefix (resetting the stream), and names the error of a
//! server that breaks HTTP/2.

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::bytes::BytesMut;
use keel::{Channel, Code};
use keel_alloc::CountingAlloc;
use keel_wire::hpack::{Decoder, Encoder, Indexing};
use keel_wire::http2::{self as frame, Reason, flag, kind, setting};
use prost::Message;
use support::frames::{Frame, Frames};
use support::{EchoRequest, EchoResponse, EchoServiceClient};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// One server connection on a blocking socket.
struct Peer {
    io: Frames,
    encoder: Encoder,
    decoder: Decoder,
    /// What the client may still send on the connection.
    conn_room: i64,
}

impl Peer {
    /// Accepts a connection, reads the client's preface and sends
    /// `settings`.
    fn accept(listener: &TcpListener, settings: &[(u16, u32)]) -> Peer {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut peer = Peer {
            io: Frames::new(stream),
            encoder: Encoder::new(),
            decoder: Decoder::new(4096),
            conn_room: i64::from(frame::DEFAULT_WINDOW),
        };
        let preface = peer.io.take(frame::PREFACE.len());
        assert_eq!(
            preface.as_deref(),
            Some(&frame::PREFACE[..]),
            "the client's preface"
        );
        let mut out = BytesMut::new();
        frame::put_settings(&mut out, settings);
        peer.send(&out);
        peer
    }

    fn send(&mut self, bytes: &[u8]) {
        self.io.send(bytes);
    }

    /// The next frame (SETTINGS acknowledged, SETTINGS acks and
    /// WINDOW_UPDATEs of the connection skipped), or `None` at the end.
    fn next(&mut self) -> Option<Frame> {
        loop {
            let f = self.io.next()?;
            match f.head.kind {
                kind::SETTINGS if !f.head.has(flag::ACK) => {
                    let mut ack = BytesMut::new();
                    frame::put_settings_ack(&mut ack);
                    self.send(&ack);
                }
                kind::SETTINGS => {}
                kind::WINDOW_UPDATE if f.head.stream == 0 => {}
                _ => return Some(f),
            }
        }
    }

    /// The first call, alone: a client may send before it has the
    /// server's SETTINGS (within the default window and no limit on
    /// streams), so what a test checks comes after it.
    fn warm_up(&mut self) {
        let (id, _, _) = self.request(frame::DEFAULT_WINDOW, 0);
        self.answer(id, b"first");
    }

    /// The header fields of a block.
    fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        self.decoder
            .decode(block, 1 << 20, |n, v| {
                fields.push((
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
            })
            .expect("a good header block");
        fields
    }

    /// Reads one request: its stream, its headers and its whole body,
    /// checking DATA against `window` (the stream window this server
    /// announced) and the connection's window, both given back by
    /// `give_back` bytes at a time once the stream's is used up.
    fn request(&mut self, window: u32, give_back: u32) -> (u32, Vec<(String, String)>, Vec<u8>) {
        let f = self.next().expect("a request");
        assert_eq!(f.head.kind, kind::HEADERS, "a request starts with HEADERS");
        assert!(f.head.has(flag::END_HEADERS));
        let id = f.head.stream;
        let fields = self.decode(&f.payload);
        let mut body = Vec::new();
        let mut stream_room = i64::from(window);
        let mut end = f.head.has(flag::END_STREAM);
        while !end {
            let f = self.next().expect("the request's body");
            assert_eq!(f.head.kind, kind::DATA, "the body is DATA");
            assert_eq!(f.head.stream, id);
            stream_room -= f.payload.len() as i64;
            self.conn_room -= f.payload.len() as i64;
            assert!(stream_room >= 0, "the client went past the stream's window");
            assert!(
                self.conn_room >= 0,
                "the client went past the connection's window"
            );
            body.extend_from_slice(&f.payload);
            end = f.head.has(flag::END_STREAM);
            if !end && stream_room == 0 {
                let mut out = BytesMut::new();
                frame::put_window_update(&mut out, id, give_back);
                frame::put_window_update(&mut out, 0, give_back);
                self.send(&out);
                stream_room += i64::from(give_back);
                self.conn_room += i64::from(give_back);
            }
        }
        (id, fields, body)
    }

    /// Answers stream `id` with `message` and `grpc-status: 0`.
    fn answer(&mut self, id: u32, message: &[u8]) {
        let mut block = BytesMut::new();
        let head = [
            (&b":status"[..], &b"200"[..], Indexing::Yes),
            (b"content-type", b"application/grpc", Indexing::Yes),
        ];
        self.encoder.encode(head, &mut block);
        let mut out = BytesMut::new();
        frame::put_headers(&mut out, id, &block, 16_384, false);
        frame::put_data(&mut out, id, &grpc_message(message), 16_384, false);
        block.clear();
        self.encoder.encode(
            [(&b"grpc-status"[..], &b"0"[..], Indexing::Yes)],
            &mut block,
        );
        frame::put_headers(&mut out, id, &block, 16_384, true);
        self.send(&out);
    }
}

/// An EchoResponse with `message`, with its gRPC prefix.
fn grpc_message(message: &[u8]) -> Vec<u8> {
    let body = EchoResponse {
        message: String::from_utf8_lossy(message).into_owned(),
    }
    .encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The request message of a gRPC body.
fn request_message(body: &[u8]) -> String {
    EchoRequest::decode(&body[5..])
        .expect("an EchoRequest")
        .message
}

/// The client's side of [`Peer::warm_up`].
async fn warm_up(client: &EchoServiceClient) {
    let first = client
        .echo(&support::request("one"))
        .timeout(Duration::from_secs(20))
        .await;
    assert_eq!(first.expect("first").message, "first");
}

fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = format!("grpc://{}", listener.local_addr().expect("addr"));
    (listener, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_exceeds_the_servers_windows() {
    let (listener, addr) = listener();
    // A 1,000-byte stream window, given back 1,000 bytes at a time: a
    // 100 KB request must go in pieces, each within the window.
    let server = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, &[(setting::INITIAL_WINDOW_SIZE, 1000)]);
        peer.warm_up();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (id, _, body) = peer.request(1000, 1000);
            let message = request_message(&body);
            seen.push(message.len());
            peer.answer(id, &message.as_bytes()[..10]);
        }
        seen
    });
    let channel = Channel::new(&addr).expect("addr");
    let client = EchoServiceClient::new(&channel);
    warm_up(&client).await;
    for _ in 0..2 {
        let reply = client
            .echo(&support::request(&"w".repeat(100_000)))
            .timeout(Duration::from_secs(20))
            .await
            .expect("the call");
        assert_eq!(reply.message, "w".repeat(10));
    }
    assert_eq!(server.join().expect("server"), [100_000, 100_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_to_the_servers_limit_and_pings_are_answered() {
    let (listener, addr) = listener();
    let server = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, &[(setting::MAX_CONCURRENT_STREAMS, 1)]);
        peer.warm_up();
        let mut ping = BytesMut::new();
        frame::put_ping(&mut ping, false, *b"pingpong");
        peer.send(&ping);
        let mut pong = None;
        let mut answered = 0;
        while answered < 3 {
            // One stream open at a time: the next HEADERS only after the
            // answer to the last.
            let f = peer.next().expect("a frame");
            match f.head.kind {
                kind::PING => {
                    assert!(f.head.has(flag::ACK), "the client pings back");
                    pong = Some(f.payload.clone());
                }
                kind::HEADERS => {
                    let id = f.head.stream;
                    let mut body = Vec::new();
                    let mut end = f.head.has(flag::END_STREAM);
                    while !end {
                        let d = peer.next().expect("DATA");
                        match d.head.kind {
                            kind::DATA => {
                                assert_eq!(d.head.stream, id, "a second stream opened");
                                body.extend_from_slice(&d.payload);
                                end = d.head.has(flag::END_STREAM);
                            }
                            kind::PING => pong = Some(d.payload.clone()),
                            other => panic!("frame type {other} inside a request"),
                        }
                    }
                    let message = request_message(&body);
                    peer.answer(id, message.as_bytes());
                    answered += 1;
                }
                other => panic!("unexpected frame type {other}"),
            }
        }
        pong
    });
    let channel = Channel::new(&addr).expect("addr");
    let client = EchoServiceClient::new(&channel);
    warm_up(&client).await;
    let calls = ["a", "b", "c"].map(|m| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .echo(&support::request(m))
                .timeout(Duration::from_secs(20))
                .await
        })
    });
    for (call, m) in calls.into_iter().zip(["a", "b", "c"]) {
        let reply = call.await.expect("task").expect("call");
        assert_eq!(reply.message, m);
    }
    let pong = server.join().expect("server");
    assert_eq!(pong.as_deref(), Some(&b"pingpong"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refused_by_goaway_is_sent_again_on_a_new_connection() {
    let (listener, addr) = listener();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let server = std::thread::spawn(move || {
        let mut first = Peer::accept(&listener, &[]);
        counted.fetch_add(1, Ordering::SeqCst);
        let _ = first.request(frame::DEFAULT_WINDOW, 0);
        // Going away before it took any stream: none of them ran.
        let mut out = BytesMut::new();
        frame::put_goaway(&mut out, 0, Reason::NoError, b"restarting");
        first.send(&out);
        let mut second = Peer::accept(&listener, &[]);
        counted.fetch_add(1, Ordering::SeqCst);
        let (id, _, body) = second.request(frame::DEFAULT_WINDOW, 0);
        second.answer(id, request_message(&body).as_bytes());
        // The first connection is closed by the client once its stream
        // is done.
        while first.next().is_some() {}
    });
    let channel = Channel::new(&addr).expect("addr");
    let reply = EchoServiceClient::new(&channel)
        .echo(&support::request("again"))
        .timeout(Duration::from_secs(20))
        .await
        .expect("sent again");
    assert_eq!(reply.message, "again");
    server.join().expect("server");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_refused_from_its_prefix_and_the_stream_reset() {
    let (listener, addr) = listener();
    let server = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, &[]);
        let (id, _, _) = peer.request(frame::DEFAULT_WINDOW, 0);
        let mut block = BytesMut::new();
        peer.encoder.encode(
            [
                (&b":status"[..], &b"200"[..], Indexing::Yes),
                (b"content-type", b"application/grpc", Indexing::Yes),
            ],
            &mut block,
        );
        let mut out = BytesMut::new();
        frame::put_headers(&mut out, id, &block, 16_384, false);
        // A prefix announcing 100 MB, and the first bytes of it.
        let mut data = vec![0];
        data.extend_from_slice(&100_000_000u32.to_be_bytes());
        data.extend_from_slice(&[7; 1000]);
        frame::put_data(&mut out, id, &data, 16_384, false);
        peer.send(&out);
        loop {
            let f = peer.next().expect("the client's reset");
            if f.head.kind == kind::RST_STREAM {
                assert_eq!(f.head.stream, id);
                return frame::rst_reason(&f.payload);
            }
        }
    });
    let channel = Channel::builder(&addr)
        .max_body_size(1 << 20)
        .build()
        .expect("channel");
    let err = EchoServiceClient::new(&channel)
        .echo(&support::request("big"))
        .timeout(Duration::from_secs(20))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("larger than max"), "{err}");
    assert_eq!(server.join().expect("server"), Reason::Cancel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_breaking_http2_gets_a_goaway_naming_its_error() {
    let (listener, addr) = listener();
    let goaway = Arc::new(Mutex::new(None));
    let seen = goaway.clone();
    let server = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, &[]);
        let _ = peer.request(frame::DEFAULT_WINDOW, 0);
        // DATA on stream 0: a connection error.
        let mut out = BytesMut::new();
        frame::put_data(&mut out, 0, b"nonsense", 16_384, false);
        peer.send(&out);
        while let Some(f) = peer.next() {
            if f.head.kind == kind::GOAWAY {
                let (_, reason, debug) = frame::goaway(&f.payload);
                *seen.lock().unwrap() = Some((reason, String::from_utf8_lossy(debug).into_owned()));
            }
        }
    });
    let channel = Channel::builder(&addr)
        .max_retry(0)
        .build()
        .expect("channel");
    let err = EchoServiceClient::new(&channel)
        .echo(&support::request("x"))
        .timeout(Duration::from_secs(20))
        .await
        .expect_err("the connection failed");
    assert_eq!(err.code(), Code::EFAILEDSOCKET, "{err}");
    assert!(err.message().contains("PROTOCOL_ERROR"), "{err}");
    server.join().expect("server");
    let (reason, debug) = goaway.lock().unwrap().clone().expect("a GOAWAY");
    assert_eq!(reason, Reason::Protocol);
    assert!(debug.contains("stream 0"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_after_a_reset_fails_with_the_servers_reason() {
    let (listener, addr) = listener();
    let server = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, &[]);
        let (id, _, _) = peer.request(frame::DEFAULT_WINDOW, 0);
        let mut out = BytesMut::new();
        frame::put_rst(&mut out, id, Reason::Internal);
        peer.send(&out);
        // The connection stays usable.
        let (id, _, body) = peer.request(frame::DEFAULT_WINDOW, 0);
        peer.answer(id, request_message(&body).as_bytes());
    });
    let channel = Channel::builder(&addr)
        .max_retry(0)
        .build()
        .expect("channel");
    let client = EchoServiceClient::new(&channel);
    let err = client
        .echo(&support::request("x"))
        .timeout(Duration::from_secs(20))
        .await
        .expect_err("reset");
    assert!(err.message().contains("reset the stream"), "{err}");
    assert!(err.message().contains("INTERNAL_ERROR"), "{err}");
    let reply = client
        .echo(&support::request("after"))
        .timeout(Duration::from_secs(20))
        .await
        .expect("the same connection");
    assert_eq!(reply.message, "after");
    server.join().expect("server");
}
