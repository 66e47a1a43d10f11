//! Memory back to the operating system: after a burst of 3,000
//! connections, after one of 50,000 concurrent calls, and after four 8 MiB
//! calls, each followed by the 5 s of quiet, a default Keel
//! server's process is back within 2 MB of the resident size it started
//! with (the server's quiet trim gives malloc's free pages back; see
//! `ServerBuilder::quiet_trim`).
//!
//! Alone in its binary, and in process: resident size is the whole
//! process's, so nothing else may run beside the test. The clients are
//! plain sockets writing baidu_std frames (the 50,000 calls are 50
//! connections with 1,000 requests each written at once, all sent before
//! any answer is read), so what the test measures is the server's memory,
//! not a client framework's.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use keel::bytes::BytesMut;
use keel_wire::baidu_std::{Limits, RequestHeader, decode_frame, encode_request};
use support::{eventually, start};

const CONNECTIONS: usize = 3_000;
const CALLS: usize = 50_000;
/// Traced calls of the warm-up: more than rpcz's store keeps.
const WARM_TRACES: i64 = 1_200;
/// The connections the calls are sent on.
const CALL_CONNECTIONS: usize = 50;
/// The large calls' message, and how many are made.
const LARGE: usize = 8 << 20;
const LARGE_CALLS: i64 = 4;
/// The quiet period and bound.
const QUIET: Duration = Duration::from_secs(5);
const BOUND: u64 = 2 << 20;
/// How long past the quiet period the test waits for the bound before
/// failing (polling, not asserting a time).
const DEADLINE: Duration = Duration::from_secs(30);

use keel_alloc::resident_bytes;

/// Appends echo requests `ids` to `out`, as a baidu_std client writes them;
/// `traced`: each with a trace id of its own, which rpcz always samples.
fn requests_with(out: &mut BytesMut, ids: std::ops::Range<i64>, traced: bool) {
    // EchoRequest { message = "0123456789abcdef" }.
    let mut payload = vec![0x0a, 16];
    payload.extend_from_slice(b"0123456789abcdef");
    for id in ids {
        let mut header = RequestHeader::new("example.EchoService", "Echo", id);
        if traced {
            header.trace_id = id;
            header.span_id = id;
        }
        encode_request(
            out,
            &header,
            payload.len(),
            |dst| dst.extend_from_slice(&payload),
            &[],
        )
        .expect("frame");
    }
}

fn requests(out: &mut BytesMut, ids: std::ops::Range<i64>) {
    requests_with(out, ids, false);
}

/// Reads the answers to `ids`, in order, each a success.
fn answers(stream: &mut std::net::TcpStream, ids: std::ops::Range<i64>) {
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    for id in ids {
        loop {
            if let Some(frame) = decode_frame(&mut buf, &Limits::default()).expect("response") {
                assert_eq!(frame.meta.correlation_id, id);
                assert_eq!(frame.meta.error_code(), 0);
                break;
            }
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One echo call over a plain blocking socket, leaving it open.
fn call(stream: &mut std::net::TcpStream, id: i64) {
    let mut out = BytesMut::new();
    requests(&mut out, id..id + 1);
    stream.write_all(&out).expect("write");
    answers(stream, id..id + 1);
}

/// One echo call of `LARGE` bytes over a plain blocking socket, its
/// request written and its answer read in small pieces, so that the
/// process's large allocations are the server's alone. Checks the answer's
/// size: an echo of the whole message.
fn large_call(stream: &mut std::net::TcpStream, id: i64) {
    // EchoRequest { message = LARGE bytes }: the tag, the length as a
    // varint, the bytes.
    let mut prefix = vec![0x0a];
    let mut n = LARGE;
    while n >= 0x80 {
        prefix.push((n as u8) | 0x80);
        n >>= 7;
    }
    prefix.push(n as u8);
    let payload_len = prefix.len() + LARGE;
    // The frame's header and meta, as encoded for an empty payload, with
    // the body size corrected for this one.
    let mut head = BytesMut::new();
    let header = RequestHeader::new("example.EchoService", "Echo", id);
    encode_request(&mut head, &header, 0, |_| {}, &[]).expect("frame");
    let body = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes")) as usize + payload_len;
    head[4..8].copy_from_slice(&(body as u32).to_be_bytes());
    stream.write_all(&head).expect("write");
    stream.write_all(&prefix).expect("write");
    let piece = [b'x'; 64 * 1024];
    let mut left = LARGE;
    while left > 0 {
        let n = left.min(piece.len());
        stream.write_all(&piece[..n]).expect("write");
        left -= n;
    }
    // The answer: its header, then its body, read and dropped.
    let mut header = [0u8; 12];
    stream.read_exact(&mut header).expect("answer's header");
    assert_eq!(&header[..4], b"PRPC");
    let body = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    assert!(
        body > LARGE,
        "the answer's body is {body} bytes: not the echo"
    );
    let mut chunk = [0u8; 64 * 1024];
    let mut left = body;
    while left > 0 {
        let n = stream
            .read(&mut chunk[..left.min(64 * 1024)])
            .expect("read");
        assert!(n > 0, "server closed");
        left -= n;
    }
}

/// Runs the test's blocking client on a thread of its own, which exits
/// when done, so the resident size measured is the server's: with
/// `block_in_place` instead, tokio hands the worker to a new thread, whose
/// stack pages (touched by the server's work on it, deep in a debug build)
/// stay resident while the thread lives, which no allocator trim gives back.
async fn off_runtime<T: Send + 'static>(client: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let _ = done.send(client());
    });
    let out = result.await.expect("the client thread answered");
    thread.join().expect("the client thread ended");
    out
}

/// Waits out the quiet period, then polls the resident size until it is
/// within the bound of `start` or the deadline passes; returns the last
/// reading.
async fn resident_after_quiet(start: u64) -> u64 {
    tokio::time::sleep(QUIET).await; // the quiet period itself, as defined
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = resident_bytes();
        if now <= start + BOUND || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The end of a burst: waits for its connections to close and the
/// process to go quiet, prints the figures, and checks the resident size
/// came back within the bound of `start`.
async fn came_back(f: &support::Fixture, what: &str, start: u64, peak: u64) {
    eventually(&format!("the connections of {what} to close"), || {
        f.server.stats().connections == 0
    })
    .await;
    let after = resident_after_quiet(start).await;
    println!(
        "{what}: RSS start {:.2} MiB, after the burst {:.2} MiB, after quiet {:.2} MiB",
        mib(start),
        mib(peak),
        mib(after)
    );
    assert!(
        after <= start + BOUND,
        "RSS {:.2} MiB after {what} and quiet, started at {:.2} MiB",
        mib(after),
        mib(start)
    );
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_comes_back_within_2_mb_after_bursts_and_quiet() {
    let f = start(|b| b).await;
    let addr = f.server.local_addr();
    // Warm-up: the runtime's and the server's one-time structures, and
    // rpcz's store of recent traces, which keeps the last 1,024 (a bounded
    // cache the console shows; a burst replaces its trees, one for one):
    // traced calls fill it.
    {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        off_runtime(move || {
            let mut out = BytesMut::new();
            requests_with(&mut out, 1..WARM_TRACES, true);
            s.write_all(&out).expect("write");
            answers(&mut s, 1..WARM_TRACES);
        })
        .await;
    }
    eventually("warm-up connection to close", || {
        f.server.stats().connections == 0
    })
    .await;
    tokio::time::sleep(QUIET).await; // a quiet period before the start too
    let start = resident_bytes();

    // 3,000 connections, each one call, all open at once, then all closed.
    off_runtime(move || {
        let mut streams = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            call(&mut s, i as i64 + WARM_TRACES);
            streams.push(s);
        }
    })
    .await;
    let peak = resident_bytes();
    came_back(&f, "3,000 connections", start, peak).await;

    // 50,000 calls sent at once: every connection's requests are written
    // before any answer is read.
    let per_connection = (CALLS / CALL_CONNECTIONS) as i64;
    let peak = off_runtime(move || {
        let mut streams = Vec::with_capacity(CALL_CONNECTIONS);
        let mut out = BytesMut::new();
        for c in 0..CALL_CONNECTIONS as i64 {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            out.clear();
            requests(&mut out, c * per_connection..(c + 1) * per_connection);
            s.write_all(&out).expect("write");
            streams.push(s);
        }
        drop(out);
        let peak = resident_bytes();
        for (c, s) in streams.iter_mut().enumerate() {
            let c = c as i64;
            answers(s, c * per_connection..(c + 1) * per_connection);
        }
        peak
    })
    .await;
    came_back(&f, "50,000 concurrent calls", start, peak).await;

    // Large messages: four 8 MiB calls on one connection.
    let peak = off_runtime(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        for id in 0..LARGE_CALLS {
            large_call(&mut s, CALLS as i64 + id);
        }
        resident_bytes()
    })
    .await;
    came_back(&f, "four 8 MiB calls", start, peak).await;
}
