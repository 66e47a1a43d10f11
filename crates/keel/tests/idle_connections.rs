//! Server memory per idle connection: 1,000 connections that each made one
//! call and stay open. brpc holds about 1.4-2.9 KB per idle connection;
//! Keel's budget is 4 KB right after the call, and 2,600 B once the
//! connections went quiet (their buffers given back: a quiet connection
//! holds no read buffer until bytes come). The budget holds after large
//! messages too: a connection that received a 2, 4 or 8 MiB request gives
//! its read buffer back once idle (rule R7) and costs what one that made a
//! small call does.

mod support;

use keel_alloc::CountingAlloc;
use support::{eventually, settle_below, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const N: usize = 1_000;
/// Server heap per connection once the connections went quiet.
const QUIET_BOUND: f64 = 2_600.0;

/// One echo call over a plain blocking socket (no client-side framework
/// memory), leaving the connection open.
fn call(stream: &mut std::net::TcpStream, id: i64) {
    support::raw_echo(stream, id, b"rrrrrrrrrrrrrrrr");
}

#[test]
fn idle_connections_cost_at_most_4kb_each_on_the_server() {
    support::alone_on(1, async {
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
        let per_connection = || {
            let d = before.delta(&keel_alloc::stats());
            (d.live_bytes as f64 - (N * std::mem::size_of::<std::net::TcpStream>()) as f64)
                / N as f64
        };
        let busy = per_connection();
        println!("server live heap per idle connection: {busy:.0} bytes");
        assert!(busy <= 4096.0, "{busy:.0} bytes per idle connection");
        // Quiet for a moment, each connection gives its buffers back.
        let quiet = settle_below(QUIET_BOUND, per_connection).await;
        println!("server live heap per quiet connection: {quiet:.0} bytes");
        assert!(
            quiet <= QUIET_BOUND,
            "{quiet:.0} bytes per connection once quiet"
        );
        drop(streams);
        eventually("connections to close", || f.server.stats().connections == 0).await;
    });
}

#[test]
fn connections_that_carried_large_requests_go_back_to_the_idle_footprint() {
    support::alone_on(1, async {
        keel::rpcz::tracer().sampler().set_target(0);
        let f = start(|b| b).await;
        let addr = f.server.local_addr();
        {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            tokio::task::block_in_place(|| call(&mut s, 1));
        }
        eventually("warm-up connection to close", || {
            f.server.stats().connections == 0
        })
        .await;
        let before = keel_alloc::stats();
        let mut streams = Vec::new();
        for (i, mib) in [2usize, 4, 8].into_iter().enumerate() {
            let large = vec![b'L'; mib << 20];
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            tokio::task::block_in_place(|| {
                call(&mut s, 1);
                support::raw_echo(&mut s, 2, &large);
                call(&mut s, 3);
            });
            drop(large);
            streams.push(s);
            let open = i + 1;
            // Bounded polling: the server gives a connection's buffers back
            // once it has been quiet for a moment.
            let per_connection = || {
                let d = before.delta(&keel_alloc::stats());
                (d.live_bytes - (open * std::mem::size_of::<std::net::TcpStream>()) as i64) as f64
                    / open as f64
            };
            let per = settle_below(4096.0, per_connection).await;
            println!(
                "after a {mib} MiB request, {open} idle connection(s): server live heap {per:.0} \
                 bytes per connection"
            );
            assert!(
                per <= 4096.0,
                "{per:.0} bytes per idle connection after a {mib} MiB request"
            );
        }
        drop(streams);
        eventually("connections to close", || f.server.stats().connections == 0).await;
    });
}
