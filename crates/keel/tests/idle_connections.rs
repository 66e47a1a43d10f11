//! Server memory per idle connection: 1,000 connections that each made one
//! call and stay open. brpc holds about 1.4-2.9 KB per idle connection;
//! Keel's budget is 4 KB.

mod support;

use keel::bytes::BytesMut;
use keel_alloc::CountingAlloc;
use keel_wire::baidu_std::{Limits, RequestHeader, decode_frame, encode_request};
use std::io::{Read, Write};
use support::{eventually, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const N: usize = 1_000;

/// One echo call over a plain blocking socket (no client-side framework
/// memory), leaving the connection open.
fn call(stream: &mut std::net::TcpStream, id: i64) {
    let mut out = BytesMut::new();
    let payload = b"\x0a\x10rrrrrrrrrrrrrrrr";
    encode_request(
        &mut out,
        &RequestHeader::new("example.EchoService", "Echo", id),
        payload.len(),
        |dst| dst.extend_from_slice(payload),
        &[],
    )
    .expect("frame");
    stream.write_all(&out).expect("write");
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some(frame) = decode_frame(&mut buf, &Limits::default()).expect("response") {
            assert_eq!(frame.meta.correlation_id, id);
            assert_eq!(frame.meta.error_code(), 0);
            return;
        }
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn idle_connections_cost_at_most_4kb_each_on_the_server() {
    // This test is about connection memory; rpcz (on by default) keeps recent traces
    // in a bounded store, which has churn tests of its own in keel-rpcz.
    keel::rpcz::tracer().sampler().set_target(0);
    let f = start(|b| b).await;
    let addr = f.server.local_addr();
    let mut streams = Vec::with_capacity(N);
    // Warm-up: the runtime's and server's one-time structures.
    {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        tokio::task::block_in_place(|| call(&mut s, 1));
    }
    eventually("warm-up connection to close", || {
        f.server.stats().connections == 0
    })
    .await;
    let before = keel_alloc::stats();
    tokio::task::block_in_place(|| {
        for i in 0..N {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            call(&mut s, i as i64 + 2);
            streams.push(s);
        }
    });
    eventually("all connections accepted", || {
        f.server.stats().connections == N
    })
    .await;
    let d = before.delta(&keel_alloc::stats());
    let per_connection =
        (d.live_bytes as f64 - (N * std::mem::size_of::<std::net::TcpStream>()) as f64) / N as f64;
    println!("server live heap per idle connection: {per_connection:.0} bytes");
    assert!(
        per_connection <= 4096.0,
        "{per_connection:.0} bytes per idle connection"
    );
    drop(streams);
    eventually("connections to close", || f.server.stats().connections == 0).await;
}
