//! Every byte comes back after large gRPC messages (rule R7): 4 MiB
//! requests and responses over one gRPC connection, plain and gzip
//! compressed, then idle: the live heap returns to within 64 KiB of its
//! baseline. Client and server share this process and its counting
//! allocator, so the bound covers both sides together. A response over the
//! client's limit fails at once, and the connection serves on.

mod support;

use std::time::Duration;

use keel::{Channel, Code, Compression};
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, alone, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Bytes the two sides together may keep after the large messages.
const SLACK: i64 = 64 * 1024;
/// A 4 MiB message (gRPC's default limit, grpc-go's too) with its
/// protobuf field header: the string inside is a little shorter.
const LARGE: usize = (4 << 20) - 8;

/// Empties what rpcz and the pools keep on purpose (bounded caches).
fn settle() {
    keel::rpcz::tracer().store().clear();
    keel_rpcz::SPANS.trim();
    keel_rpcz::TREES.trim();
}

/// Live heap once the server has no call in flight and the connection has
/// been idle for a while.
async fn idle_heap(f: &support::Fixture) -> i64 {
    eventually("server calls to finish", || f.server.stats().in_flight == 0).await;
    // The idle period the bound is about; nothing waits on it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle();
    keel_alloc::stats().live_bytes()
}

/// Live heap once the connection is idle, polled (bounded) until it is
/// within `SLACK` of `before`: each side gives its buffers back on its own
/// timer, 250 to 500 ms after its last activity.
async fn idle_heap_back_to(f: &support::Fixture, before: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = idle_heap(f).await;
        if now - before < SLACK || tokio::time::Instant::now() >= deadline {
            return now;
        }
    }
}

async fn large_messages_leave_nothing_behind(compression: Compression) {
    keel::rpcz::tracer().sampler().set_target(0);
    let f = start(|b| b).await;
    let channel = Channel::new(&format!("grpc://{}", f.addr())).expect("addr");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..100 {
        client.echo(&request("warm")).await.expect("warm-up");
    }
    let before = idle_heap(&f).await;

    // Not all alike, so that compression has something to do but not
    // everything is one repeated byte.
    let text: String = (0..LARGE)
        .map(|i| (b'a' + (i % 23) as u8) as char)
        .collect();
    let big = request(&text);
    drop(text);
    for _ in 0..3 {
        let reply = client
            .echo(&big)
            .compression(compression)
            .timeout(Duration::from_secs(60))
            .await
            .expect("4 MiB echoed");
        assert_eq!(reply.message.len(), LARGE);
    }
    drop(big);
    let after = idle_heap_back_to(&f, before).await;
    println!(
        "3 calls of 4 MiB each way over gRPC ({compression:?}), then idle: live heap {:+} B",
        after - before
    );
    assert!(
        after - before < SLACK,
        "4 MiB gRPC calls ({compression:?}) left {} bytes behind",
        after - before
    );
    assert_eq!(channel.pending_calls(), 0);
}

#[test]
fn four_mib_grpc_calls_leave_nothing_behind() {
    alone(large_messages_leave_nothing_behind(Compression::None));
}

#[test]
fn four_mib_compressed_grpc_calls_leave_nothing_behind() {
    alone(large_messages_leave_nothing_behind(Compression::Gzip));
}

#[test]
fn a_response_over_the_clients_limit_fails_at_once_and_the_connection_serves_on() {
    alone(async {
        let f = start(|b| b.max_grpc_message_size(2 * LARGE)).await;
        let channel = Channel::new(&format!("grpc://{}", f.addr())).expect("addr");
        let client = EchoServiceClient::new(&channel);
        // Over the client's default 4 MiB limit by a few bytes, so the
        // server (8 MiB) takes it and answers in kind.
        let big = request(&"o".repeat(LARGE + 64));
        let started = tokio::time::Instant::now();
        let refused = client
            .echo(&big)
            .timeout(Duration::from_secs(20))
            .await
            .expect_err("over the client's limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
        println!("refused after {:?}: {refused}", started.elapsed());
        let reply = client
            .echo(&request("after"))
            .timeout(Duration::from_secs(20))
            .await
            .expect("the connection serves on");
        assert_eq!(reply.message, "after");
        assert_eq!(f.server.stats().connections, 1);
    });
}
